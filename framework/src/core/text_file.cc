#include "posttrain/core/text_file.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace posttrain {

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat("file '", path, "' does not exist"));
  }
  gzFile file = gzopen(path.c_str(), "rb");  // reads plain files transparently
  if (file == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot open '", path, "': ", std::strerror(errno)));
  }
  gzbuffer(file, 1 << 17);
  std::string content;
  char buffer[1 << 16];
  while (true) {
    int n = gzread(file, buffer, sizeof(buffer));
    if (n < 0) {
      int code = 0;
      std::string message = gzerror(file, &code);
      gzclose(file);
      return absl::DataLossError(absl::StrCat("reading '", path, "': ", message));
    }
    if (n == 0) break;
    content.append(buffer, static_cast<size_t>(n));
  }
  // A truncated gzip stream reads as a short file without an error from gzread;
  // gzclose_r reports it.
  const int close_status = gzclose_r(file);
  if (close_status != Z_OK) {
    return absl::DataLossError(absl::StrCat("'", path, "' is a truncated or corrupt gzip file"));
  }
  return content;
}

}  // namespace posttrain
