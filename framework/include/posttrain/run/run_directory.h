// The run directory (`output_dir`) and what is written into it.
//
//   output_dir/
//     recipe.resolved.toml   the recipe after overrides, defaults filled in
//     run.log                every log message of the run
//     metrics.jsonl          one JSON object per logging step (TRL metric names)
//     completions.jsonl      rollouts with their rewards, every logging step
//
// Files are written to a temporary name, fsynced and renamed (WriteFileAtomic), or
// appended line by line and flushed (JsonlWriter), so a killed run loses nothing
// already written.
#pragma once

#include "absl/strings/string_view.h"
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "posttrain/core/atomic_file.h"

namespace posttrain {

// Cuts a JSONL log back to the lines whose "step" is at most `step` (lines without
// one are kept), atomically: a run resumed from checkpoint-<step> then appends
// without repeating a step. A missing file is fine.
absl::Status TruncateJsonlAfterStep(const std::string& path, std::int64_t step);

class RunDirectory {
 public:
  // Creates `path` (and parents). FailedPrecondition if it already holds a run
  // (a metrics.jsonl) and `overwrite` is false (a resumed run passes true).
  static absl::StatusOr<RunDirectory> Create(const std::string& path, bool overwrite);
  // A run directory another process (rank 0) creates and writes: only its paths.
  static RunDirectory At(const std::string& path) { return RunDirectory(path); }

  const std::string& path() const { return path_; }
  // path()/name
  std::string File(absl::string_view name) const;

 private:
  explicit RunDirectory(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// Appends JSON objects as lines, flushed after each. Not thread-safe.
class JsonlWriter {
 public:
  JsonlWriter() = default;
  ~JsonlWriter();
  JsonlWriter(JsonlWriter&&) noexcept;
  JsonlWriter& operator=(JsonlWriter&&) noexcept;

  // Creates `path`, truncating it unless `append`.
  static absl::StatusOr<JsonlWriter> Open(const std::string& path, bool append = false);
  absl::Status Write(const nlohmann::json& object);

 private:
  std::FILE* file_ = nullptr;
  std::string path_;
};

}  // namespace posttrain
