// Writing a file so that readers see the old or the new content, never a part.
//
//   POSTTRAIN_RETURN_IF_ERROR(WriteFileAtomic(dir + "/config.json", json.dump(2)));
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace posttrain {

// Writes `content` to `path` through a temporary file unique to the call
// (`path.tmp.<pid>.<n>`) + fsync + rename: readers see the old or the new file,
// never a partial one, even with concurrent writers. On failure (disk full, a
// read-only directory) the temporary file is removed and `path` is untouched.
// PermissionDenied if the file cannot be created, DataLoss if writing fails.
absl::Status WriteFileAtomic(const std::string& path, absl::string_view content);

}  // namespace posttrain
