// TensorBoard event files (`report_to = ["tensorboard"]`): every logged metric as a
// scalar at its global step, and text (the resolved recipe, sampled completions).
//
//   POSTTRAIN_ASSIGN_OR_RETURN(auto tb, TensorBoardWriter::Open("runs/x/runs", /*resume_step=*/-1));
//   POSTTRAIN_RETURN_IF_ERROR(tb->AddScalars(10, {{"train/loss", 0.7}}));
//   POSTTRAIN_RETURN_IF_ERROR(tb->AddText(0, "recipe", "<the resolved TOML>"));
//
// The file (`events.out.tfevents.<unix time>.<host>`) is TFRecord framing — per
// record: uint64 length (little-endian), uint32 masked CRC-32C of those 8 bytes, the
// bytes of one serialized Event (framework/proto/tensorboard_event.proto), uint32
// masked CRC-32C of them; mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 — starting
// with an Event holding file_version "brain.Event:2". Each record is flushed as it
// is written: a killed run loses nothing already logged.
//
// Resuming (resume_step >= 0) continues the newest event file of the directory:
// its records up to resume_step are kept (rewritten atomically), later ones dropped,
// so no step appears twice. Not thread-safe.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace posttrain {

// CRC-32C (Castagnoli) of `size` bytes, and TFRecord's masked form of a CRC.
std::uint32_t Crc32c(const void* data, std::size_t size);
std::uint32_t MaskCrc(std::uint32_t crc);

class TensorBoardWriter {
 public:
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // Creates `dir` if needed. resume_step < 0: a new file.
  static absl::StatusOr<std::unique_ptr<TensorBoardWriter>> Open(const std::string& dir, std::int64_t resume_step);

  // One Event at `step` with a scalar value per (tag, value).
  absl::Status AddScalars(std::int64_t step, const std::map<std::string, double>& scalars);
  // One Event at `step` with `text` (Markdown, as TensorBoard's text plugin shows it).
  absl::Status AddText(std::int64_t step, const std::string& tag, const std::string& text);

  const std::string& path() const { return path_; }

  // The serialized Events of a file, in order; DataLoss naming the record whose
  // framing or CRC is wrong (a partly written last record is dropped, not an error:
  // the run was killed while writing it).
  static absl::StatusOr<std::vector<std::string>> ReadRecords(const std::string& path);

 private:
  TensorBoardWriter(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  absl::Status WriteRecord(const std::string& bytes);
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace posttrain
