// Recipes: TOML files that pick components by registered name and set their options.
//
//   output_dir = "runs/dpo_hh"
//   seed = 42
//   plugin_dirs = ["build/my_plugins"]    # optional, besides the built-in ones
//
//   [model]           (optional) the policy: path = "models/stories260K", dtype, tokenizer
//   [data]            type = "jsonl"   path = "recipes/data/gsm8k_train_head1024.jsonl"
//   [eval_data]       (optional) a second data adapter, for evaluation
//   [sampler]         (optional) type = "..."
//   [[rewards]]       (optional, repeated) type = "...", weight = 1.0, name = "..."
//   [trainer]         type = "dpo"   beta = 0.1   (+ the engine's options)
//
// Use:
//   POSTTRAIN_ASSIGN_OR_RETURN(Recipe recipe, Recipe::LoadFile(path, {"trainer.beta=0.2"}));
//   host.LoadDirectory(...) for each of recipe.plugin_dirs();
//   POSTTRAIN_RETURN_IF_ERROR(recipe.Validate(host.registry()));   // every error at once
//   POSTTRAIN_ASSIGN_OR_RETURN(ComponentConfig trainer, recipe.Component("trainer", registry));
//
// Relative paths in a recipe are relative to the working directory (recipes in this
// repository are run from its root). Errors are InvalidArgument with one line per
// problem: "file:line:column: table.key: what is wrong (did you mean ...)".
#pragma once

#include "absl/strings/string_view.h"
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "posttrain/core/component_config.h"
#include "posttrain/plugin/registry.h"

namespace posttrain {

class Recipe {
 public:
  // Parses a file and applies `overrides` ("table.key=value", value in TOML syntax;
  // a bare word is taken as a string; "rewards.0.weight=2" indexes arrays).
  // NotFound for a missing file; InvalidArgument for a TOML syntax error (with line
  // and column) or a malformed override.
  static absl::StatusOr<Recipe> LoadFile(const std::string& path,
                                         const std::vector<std::string>& overrides = {});
  // The same from text; `source_name` is used in messages.
  static absl::StatusOr<Recipe> Parse(absl::string_view text, std::string source_name,
                                      const std::vector<std::string>& overrides = {});

  Recipe(Recipe&&) noexcept;
  Recipe& operator=(Recipe&&) noexcept;
  ~Recipe();

  const std::string& source_name() const;

  // Top-level settings (defaults when absent or mistyped; Validate reports the latter).
  std::string output_dir() const;
  std::int64_t seed() const;
  bool overwrite_output_dir() const;
  std::vector<std::string> plugin_dirs() const;

  // Checks everything against the registry: top-level keys, that each component
  // table names a registered component of its kind, every option's name, type,
  // allowed values and presence. InvalidArgument listing every problem.
  absl::Status Validate(const Registry& registry) const;

  // Whether a component table ("data", "eval_data", "sampler", "trainer") is present.
  bool HasComponent(absl::string_view table) const;
  // A component table's `type` ("" when the table or its type is absent).
  std::string ComponentType(absl::string_view table) const;
  // The validated options of a component table. Call after Validate.
  absl::StatusOr<ComponentConfig> Component(absl::string_view table, const Registry& registry) const;

  // [data] eval_size: the share (< 1) or number (>= 1) of examples held out.
  double eval_size() const;

  // The [model] table (path, dtype, tokenizer), if present. Call after Validate.
  absl::StatusOr<std::optional<ComponentConfig>> Model() const;

  struct RewardEntry {
    std::string name;  // for metrics: `name`, or the type
    double weight = 1.0;
    bool skip_errors = false;  // on_error = "skip"
    ComponentConfig config;
  };
  absl::StatusOr<std::vector<RewardEntry>> Rewards(const Registry& registry) const;

  // The recipe after overrides with every component option's default filled in, as
  // TOML: running it again gives the same run.
  std::string ResolvedToml(const Registry& registry) const;

 private:
  struct Impl;
  explicit Recipe(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace posttrain
