// safetensors: read (mmap) and write Hugging Face's tensor files.
//
// Format (https://huggingface.co/docs/safetensors): 8 bytes little-endian u64 N,
// then N bytes of UTF-8 JSON {"name": {"dtype": "F32", "shape": [..],
// "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}, then the data
// buffer; offsets are relative to the buffer, row-major, little-endian.
//
//   POSTTRAIN_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open("model.safetensors"));
//   POSTTRAIN_ASSIGN_OR_RETURN(at::Tensor w, file.Get("model.embed_tokens.weight"));
//   POSTTRAIN_RETURN_IF_ERROR(SaveSafetensors("out.safetensors", {{"w", w}}, {{"format", "pt"}}));
//
// Open validates everything a hostile file could get wrong before any tensor is
// touched: file shorter than 8 bytes, header size beyond the file or above 100 MB,
// invalid JSON, unknown dtype, negative or overflowing shapes, byte ranges that do
// not match dtype × shape, ranges outside the buffer, overlapping ranges. Errors are
// InvalidArgument / DataLoss naming the file and the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace posttrain {

struct SafetensorsEntry {
  std::string name;
  at::ScalarType dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  // byte offsets into the data buffer
  std::uint64_t end = 0;
};

class SafetensorsFile {
 public:
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  // Entries in file order of their data.
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool Contains(absl::string_view name) const;

  // A copy of the tensor (CPU, contiguous, its stored dtype). NotFound if absent.
  absl::StatusOr<at::Tensor> Get(absl::string_view name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  const std::uint8_t* data_ = nullptr;  // mmap'ed file
  std::size_t size_ = 0;
  std::uint64_t buffer_offset_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any CPU dtype safetensors knows; made contiguous) atomically:
// a temporary file, fsync, rename. Names must be unique.
absl::Status SaveSafetensors(const std::string& path,
                             const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                             const std::map<std::string, std::string>& metadata = {});

// "F32", "BF16", ... for a dtype; InvalidArgument for dtypes safetensors lacks.
absl::StatusOr<std::string> SafetensorsDtypeName(at::ScalarType dtype);

// Every tensor of a Hugging Face checkpoint directory: model.safetensors, or the
// shards listed in model.safetensors.index.json ("weight_map"). Errors name the
// file; a tensor listed in the index but missing from its shard is DataLoss.
absl::StatusOr<std::map<std::string, at::Tensor>> LoadSafetensorsDir(const std::string& dir);

// Writes `tensors` as model.safetensors, or, when their total size exceeds
// `max_shard_bytes`, as model-0000i-of-0000n.safetensors + index.
absl::Status SaveSafetensorsDir(const std::string& dir,
                                const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                std::uint64_t max_shard_bytes = 5ull << 30);

}  // namespace posttrain
