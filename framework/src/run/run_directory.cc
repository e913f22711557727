#include "posttrain/run/run_directory.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace posttrain {
namespace fs = std::filesystem;

absl::Status TruncateJsonlAfterStep(const std::string& path, std::int64_t step) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::OkStatus();
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(absl::StrCat("cannot read '", path, "'"));
  std::string kept, line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const nlohmann::json row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    // A line cut by a kill mid-write is dropped with everything after the checkpoint.
    if (row.is_discarded()) continue;
    if (row.contains("step") && row["step"].is_number_integer() && row["step"].get<std::int64_t>() > step) continue;
    kept += line;
    kept += '\n';
  }
  return WriteFileAtomic(path, kept);
}

absl::StatusOr<RunDirectory> RunDirectory::Create(const std::string& path, bool overwrite) {
  std::error_code ec;
  if (fs::exists(fs::path(path) / "metrics.jsonl", ec) && !overwrite) {
    return absl::FailedPreconditionError(absl::StrCat(
        "output_dir '", path,
        "' already holds a run (metrics.jsonl); choose another output_dir, or set "
        "overwrite_output_dir = true to replace its logs"));
  }
  fs::create_directories(path, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create output_dir '", path, "': ", ec.message()));
  }
  return RunDirectory(path);
}

std::string RunDirectory::File(absl::string_view name) const {
  return (fs::path(path_) / std::string(name)).string();
}

JsonlWriter::~JsonlWriter() {
  if (file_ != nullptr) std::fclose(file_);
}
JsonlWriter::JsonlWriter(JsonlWriter&& other) noexcept
    : file_(std::exchange(other.file_, nullptr)), path_(std::move(other.path_)) {}
JsonlWriter& JsonlWriter::operator=(JsonlWriter&& other) noexcept {
  if (this != &other) {
    if (file_ != nullptr) std::fclose(file_);
    file_ = std::exchange(other.file_, nullptr);
    path_ = std::move(other.path_);
  }
  return *this;
}

absl::StatusOr<JsonlWriter> JsonlWriter::Open(const std::string& path, bool append) {
  JsonlWriter writer;
  writer.file_ = std::fopen(path.c_str(), append ? "a" : "w");
  if (writer.file_ == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot open '", path, "' for writing: ", std::strerror(errno)));
  }
  writer.path_ = path;
  return writer;
}

absl::Status JsonlWriter::Write(const nlohmann::json& object) {
  if (file_ == nullptr) return absl::FailedPreconditionError("JsonlWriter is not open");
  const std::string line = object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() ||
      std::fputc('\n', file_) == EOF || std::fflush(file_) != 0) {
    return absl::DataLossError(absl::StrCat("writing '", path_, "': ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace posttrain
