#include "posttrain/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "posttrain/core/device.h"
#include "posttrain/core/status.h"
#include "posttrain/core/text_file.h"
#include "posttrain/core/atomic_file.h"

namespace posttrain {
namespace {

constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeName {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat},  {"F16", at::kHalf},  {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},    {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

absl::Status Bad(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors file '", path, "': ", what));
}

}  // namespace

absl::StatusOr<std::string> SafetensorsDtypeName(at::ScalarType dtype) {
  for (const DtypeName& d : kDtypes) {
    if (d.type == dtype) return std::string(d.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("dtype ", c10::toString(dtype), " cannot be stored in safetensors"));
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept { *this = std::move(other); }
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) ::munmap(const_cast<std::uint8_t*>(data_), size_);
    path_ = std::move(other.path_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    buffer_offset_ = other.buffer_offset_;
    entries_ = std::move(other.entries_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}
SafetensorsFile::~SafetensorsFile() {
  if (data_ != nullptr) ::munmap(const_cast<std::uint8_t*>(data_), size_);
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  SafetensorsFile file;
  file.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat("cannot open safetensors file '", path, "': ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat("cannot stat '", path, "'"));
  }
  file.size_ = static_cast<std::size_t>(st.st_size);
  if (file.size_ < 8) {
    ::close(fd);
    return Bad(path, absl::StrCat("file is ", file.size_,
                                  " bytes, shorter than the 8-byte header size (truncated?)"));
  }
  void* map = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return absl::DataLossError(absl::StrCat("cannot mmap '", path, "'"));
  file.data_ = static_cast<const std::uint8_t*>(map);

  std::uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | file.data_[i];
  if (header_size > kMaxHeaderBytes) {
    return Bad(path, absl::StrCat("header size ", header_size, " exceeds the 100 MB limit"));
  }
  if (header_size > file.size_ - 8) {
    return Bad(path, absl::StrCat("header size ", header_size, " runs past the end of the ",
                                  file.size_, "-byte file (truncated?)"));
  }
  file.buffer_offset_ = 8 + header_size;
  const std::uint64_t buffer_size = file.size_ - file.buffer_offset_;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(file.data_ + 8, file.data_ + 8 + header_size);
  } catch (const nlohmann::json::exception& e) {
    return Bad(path, absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) return Bad(path, "header is not a JSON object");

  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) return Bad(path, "__metadata__ is not an object");
      for (const auto& [key, value] : info.items()) {
        if (!value.is_string()) return Bad(path, absl::StrCat("__metadata__.", key, " is not a string"));
        file.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor '", name, "'");
    if (!info.is_object() || !info.contains("dtype") || !info.contains("shape") ||
        !info.contains("data_offsets")) {
      return Bad(path, absl::StrCat(where, " lacks dtype, shape or data_offsets"));
    }
    SafetensorsEntry entry;
    entry.name = name;
    const nlohmann::json& dtype = info["dtype"];
    bool known = false;
    for (const DtypeName& d : kDtypes) {
      if (dtype.is_string() && dtype.get<std::string>() == d.name) {
        entry.dtype = d.type;
        known = true;
      }
    }
    if (!known) return Bad(path, absl::StrCat(where, " has unsupported dtype ", dtype.dump()));
    if (!info["shape"].is_array()) return Bad(path, absl::StrCat(where, ": shape is not a list"));
    std::uint64_t numel = 1;
    for (const nlohmann::json& d : info["shape"]) {
      if (!d.is_number_integer() || d.get<std::int64_t>() < 0) {
        return Bad(path, absl::StrCat(where, ": shape ", info["shape"].dump(),
                                      " has a dimension that is not a non-negative integer"));
      }
      const auto dim = d.get<std::uint64_t>();
      if (dim != 0 && numel > std::numeric_limits<std::uint64_t>::max() / dim) {
        return Bad(path, absl::StrCat(where, ": shape overflows"));
      }
      numel *= dim;
      entry.shape.push_back(static_cast<std::int64_t>(dim));
    }
    const nlohmann::json& offsets = info["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      return Bad(path, absl::StrCat(where, ": data_offsets must be [begin, end]"));
    }
    entry.begin = offsets[0].get<std::uint64_t>();
    entry.end = offsets[1].get<std::uint64_t>();
    const std::uint64_t element = c10::elementSize(entry.dtype);
    if (entry.end < entry.begin) return Bad(path, absl::StrCat(where, ": data_offsets end < begin"));
    if (numel > std::numeric_limits<std::uint64_t>::max() / element ||
        entry.end - entry.begin != numel * element) {
      return Bad(path, absl::StrCat(where, ": shape ", info["shape"].dump(), " of ",
                                    dtype.get<std::string>(), " needs ", numel * element,
                                    " bytes but data_offsets span ", entry.end - entry.begin));
    }
    if (entry.end > buffer_size) {
      return Bad(path, absl::StrCat(where, ": data_offsets [", entry.begin, ", ", entry.end,
                                    "] run past the ", buffer_size,
                                    "-byte data buffer (truncated?)"));
    }
    file.entries_.push_back(std::move(entry));
  }
  std::sort(file.entries_.begin(), file.entries_.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < file.entries_.size(); ++i) {
    if (file.entries_[i].begin < file.entries_[i - 1].end) {
      return Bad(path, absl::StrCat("tensors '", file.entries_[i - 1].name, "' and '",
                                    file.entries_[i].name, "' overlap"));
    }
  }
  return file;
}

bool SafetensorsFile::Contains(absl::string_view name) const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [&](const SafetensorsEntry& e) { return e.name == name; });
}

absl::StatusOr<at::Tensor> SafetensorsFile::Get(absl::string_view name) const {
  for (const SafetensorsEntry& e : entries_) {
    if (e.name != name) continue;
    at::Tensor out = at::empty(e.shape, HostOptions(e.dtype));  // file contents: host memory
    if (e.end > e.begin) {
      std::memcpy(out.data_ptr(), data_ + buffer_offset_ + e.begin, e.end - e.begin);
    }
    return out;
  }
  return absl::NotFoundError(absl::StrCat("safetensors file '", path_, "' has no tensor '", name, "'"));
}

absl::Status SaveSafetensors(const std::string& path,
                             const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                             const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> contiguous;
  std::uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (header.contains(name)) return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name '", name, "'"));
    if (!tensor.defined()) return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is undefined"));
    POSTTRAIN_ASSIGN_OR_RETURN(std::string dtype, SafetensorsDtypeName(tensor.scalar_type()));
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    const std::uint64_t bytes = static_cast<std::uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(std::move(t));
  }
  std::string header_text = header.dump();
  // Pad the header with spaces so the buffer starts 8-byte aligned.
  while ((8 + header_text.size()) % 8 != 0) header_text.push_back(' ');
  std::string content;
  content.reserve(8 + header_text.size() + offset);
  const std::uint64_t n = header_text.size();
  for (int i = 0; i < 8; ++i) content.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  content += header_text;
  for (const at::Tensor& t : contiguous) {
    content.append(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()) * t.element_size());
  }
  return WriteFileAtomic(path, content);
}

absl::StatusOr<std::map<std::string, at::Tensor>> LoadSafetensorsDir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::map<std::string, at::Tensor> tensors;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::error_code ec;
  if (fs::exists(single, ec)) {
    POSTTRAIN_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(single.string()));
    for (const SafetensorsEntry& e : file.entries()) {
      POSTTRAIN_ASSIGN_OR_RETURN(tensors[e.name], file.Get(e.name));
    }
    return tensors;
  }
  if (!fs::exists(index, ec)) {
    return absl::NotFoundError(absl::StrCat("'", dir, "' has neither model.safetensors nor model.safetensors.index.json"));
  }
  POSTTRAIN_ASSIGN_OR_RETURN(std::string text, ReadTextFile(index.string()));
  nlohmann::json json = nlohmann::json::parse(text, nullptr, false);
  if (json.is_discarded() || !json.contains("weight_map") || !json["weight_map"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("'", index.string(), "' has no \"weight_map\" object"));
  }
  std::map<std::string, std::vector<std::string>> by_shard;
  for (const auto& [name, shard] : json["weight_map"].items()) {
    if (!shard.is_string()) return absl::InvalidArgumentError(absl::StrCat(index.string(), ": weight_map.", name, " is not a file name"));
    const std::string shard_name = shard.get<std::string>();
    if (shard_name.find('/') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(index.string(), ": shard '", shard_name, "' is not a plain file name"));
    }
    by_shard[shard_name].push_back(name);
  }
  for (const auto& [shard, names] : by_shard) {
    POSTTRAIN_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open((fs::path(dir) / shard).string()));
    for (const std::string& name : names) {
      absl::StatusOr<at::Tensor> t = file.Get(name);
      if (!t.ok()) return absl::DataLossError(absl::StrCat(index.string(), " lists '", name, "' in ", shard, " but it is not there"));
      tensors[name] = std::move(*t);
    }
    // A shard's tensors are all in the index: a shard that disagrees with it (from
    // another save, or a renamed file) is refused rather than half-read.
    for (const SafetensorsEntry& e : file.entries()) {
      if (std::find(names.begin(), names.end(), e.name) == names.end()) {
        return absl::DataLossError(absl::StrCat(index.string(), ": shard ", shard, " holds '", e.name,
                                                "', which the index does not list there"));
      }
    }
  }
  return tensors;
}

absl::Status SaveSafetensorsDir(const std::string& dir,
                                const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                std::uint64_t max_shard_bytes) {
  namespace fs = std::filesystem;
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(1);
  std::uint64_t shard_bytes = 0, total = 0;
  for (const auto& item : tensors) {
    const std::uint64_t bytes = static_cast<std::uint64_t>(item.second.numel()) * item.second.element_size();
    if (shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(item);
    shard_bytes += bytes;
    total += bytes;
  }
  std::error_code ec;
  fs::remove(fs::path(dir) / "model.safetensors.index.json", ec);
  if (shards.size() == 1) return SaveSafetensors((fs::path(dir) / "model.safetensors").string(), tensors, metadata);
  fs::remove(fs::path(dir) / "model.safetensors", ec);
  nlohmann::ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", nlohmann::ordered_json::object()}};
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    POSTTRAIN_RETURN_IF_ERROR(SaveSafetensors((fs::path(dir) / name).string(), shards[i], metadata));
    for (const auto& item : shards[i]) index["weight_map"][item.first] = name;
  }
  return WriteFileAtomic((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2) + "\n");
}

}  // namespace posttrain
