// Extension point: DataAdapter — turns a source into Examples.
//
// A data adapter reads one source (JSONL, JSONL.gz, plain text, ...) and returns its
// records as Examples in TRL's dataset formats (see core/example.h). Field names are
// mapped by the adapter's options (`prompt_field = "question"`).
//
//   class MyAdapter final : public posttrain::DataAdapter {
//    public:
//     static posttrain::ComponentSchema Schema();
//     static absl::StatusOr<std::unique_ptr<posttrain::DataAdapter>> Create(
//         const posttrain::ComponentConfig& config);
//     absl::StatusOr<std::vector<posttrain::Example>> Load() override;
//   };
//   POSTTRAIN_REGISTER_DATA_ADAPTER("my_format", MyAdapter);
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "posttrain/core/example.h"

namespace posttrain {

class DataAdapter {
 public:
  virtual ~DataAdapter() = default;

  // Reads the whole source. Errors: NotFound (missing file), InvalidArgument naming
  // "file:line" and what was expected for a malformed record (unless the adapter was
  // told to skip and count them). Called once, from one thread.
  virtual absl::StatusOr<std::vector<Example>> Load() = 0;

  // Records skipped as malformed by the last Load() (0 unless skipping is enabled).
  virtual std::int64_t num_skipped() const { return 0; }
  // Where the first of them were and why ("file:line: what was expected"), for the log.
  virtual std::vector<std::string> skipped_rows() const { return {}; }
};

}  // namespace posttrain
