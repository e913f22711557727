#include "posttrain/run/run_directory.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace posttrain {
namespace fs = std::filesystem;

absl::Status WriteFileAtomic(const std::string& path, absl::string_view content) {
  // A name of this process and call alone, so concurrent writers never share it.
  static std::atomic<std::uint64_t> counter{0};
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid(), ".", counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write '", tmp, "': ", std::strerror(errno)));
  }
  size_t written = 0;
  while (written < content.size()) {
    ssize_t n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      return absl::DataLossError(absl::StrCat("writing '", tmp, "': ", std::strerror(error)));
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    return absl::DataLossError(absl::StrCat("flushing '", tmp, "': ", std::strerror(errno)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::DataLossError(
        absl::StrCat("renaming '", tmp, "' to '", path, "': ", std::strerror(errno)));
  }
  return absl::OkStatus();
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
