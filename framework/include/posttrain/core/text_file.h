// Reading text sources line by line: plain or gzip-compressed (detected from the
// content, so `data.jsonl.gz` and `data.jsonl` are read the same way).
//
//   POSTTRAIN_ASSIGN_OR_RETURN(std::string text, ReadTextFile("data.jsonl.gz"));
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace posttrain {

// The whole (decompressed) content. NotFound if missing; DataLoss for a corrupt or
// truncated gzip stream.
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

}  // namespace posttrain
