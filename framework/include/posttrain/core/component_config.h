// Options of a component (trainer, reward function, sampler, data adapter): the
// schema a plugin declares, and the validated values a recipe gives it.
//
// A plugin declares each option once, with its type, default and doc; the host
// validates the recipe table against the schema before anything heavy runs, and
// `posttrain describe NAME` prints it:
//
//   ComponentSchema KeywordReward::Schema() {
//     return ComponentSchema("1.0 if the completion mentions any of `keywords`.")
//         .StringList("keywords", {}, "Words to look for (required, non-empty).")
//         .Bool("case_sensitive", false, "Match case exactly.");
//   }
//   absl::StatusOr<std::unique_ptr<RewardFunction>> KeywordReward::Create(
//       const ComponentConfig& config) {
//     auto words = config.GetStringList("keywords");   // recipe value or default
//     ...
//   }
//
// Thread-safety: a ComponentConfig is read by one factory call; getters record which
// keys were read (mutable, not synchronised).
#pragma once

#include "absl/strings/string_view.h"
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"

namespace posttrain {

enum class OptionType { kBool, kInt, kFloat, kString, kStringList, kFloatList };

// "bool", "int", "float", "string", "list of strings", "list of floats".
absl::string_view OptionTypeName(OptionType type);

using OptionValue = std::variant<bool, std::int64_t, double, std::string,
                                 std::vector<std::string>, std::vector<double>>;

// The TOML-like text of a value: true, 3, 0.1, "sigmoid", ["a", "b"], [1.0, 2.0].
std::string FormatOptionValue(const OptionValue& value);

struct OptionSpec {
  std::string name;
  OptionType type = OptionType::kString;
  // Absent for required options.
  std::optional<OptionValue> default_value;
  std::string doc;
  // For kString: the allowed values (empty = any).
  std::vector<std::string> choices;
  // For kInt, kFloat, kFloatList: the accepted range (absent bound = unbounded),
  // each end closed or open, and one value accepted besides it (e.g. -1 = off).
  // Floats must also be finite.
  std::optional<double> min, max;
  bool min_open = false, max_open = false;
  std::optional<double> sentinel;

  // "" if `value` is accepted, else what was expected: "must be > 0, got -3".
  std::string CheckValue(const OptionValue& value) const;
  // The range as text for `describe`: "> 0", "in [0, 1)", ">= 1, or -1"; "" if any.
  std::string RangeText() const;
};

// The options a component accepts. Built fluently; names are unique.
class ComponentSchema {
 public:
  ComponentSchema() = default;
  explicit ComponentSchema(std::string doc) : doc_(std::move(doc)) {}

  ComponentSchema& Bool(std::string name, bool default_value, std::string doc);
  ComponentSchema& Int(std::string name, std::int64_t default_value, std::string doc);
  ComponentSchema& Float(std::string name, double default_value, std::string doc);
  ComponentSchema& String(std::string name, std::string default_value, std::string doc,
                          std::vector<std::string> choices = {});
  ComponentSchema& StringList(std::string name, std::vector<std::string> default_value,
                              std::string doc);
  ComponentSchema& FloatList(std::string name, std::vector<double> default_value,
                             std::string doc);
  // An option the recipe must set (no default).
  ComponentSchema& Required(std::string name, OptionType type, std::string doc);
  // Bounds of the option declared last (int, float or float list): closed
  // (AtLeast, AtMost) or open (GreaterThan, LessThan); OrEqualTo adds one value
  // accepted outside them. Declaring a bound on another type is a logic_error.
  ComponentSchema& AtLeast(double min);
  ComponentSchema& GreaterThan(double min);
  ComponentSchema& AtMost(double max);
  ComponentSchema& LessThan(double max);
  ComponentSchema& OrEqualTo(double sentinel);
  // Appends every option of `other` not already declared here (used to add the
  // engine's options to each trainer).
  ComponentSchema& Merge(const ComponentSchema& other);

  const std::string& doc() const { return doc_; }
  const std::vector<OptionSpec>& options() const { return options_; }
  const OptionSpec* Find(absl::string_view name) const;
  std::vector<std::string> Names() const;

 private:
  ComponentSchema& Add(OptionSpec spec);
  ComponentSchema& Bound(double value, bool open, bool lower, bool check_only = false);

  std::string doc_;
  std::vector<OptionSpec> options_;
};

// The validated options of one component as the recipe sets them.
class ComponentConfig {
 public:
  // `where` names the recipe table for messages, e.g. "recipe.toml [trainer]".
  ComponentConfig(std::string type, const ComponentSchema* schema,
                  std::map<std::string, OptionValue> values, std::string where);

  // The registered name the recipe picked (`type = "..."`).
  const std::string& type() const { return type_; }
  const std::string& where() const { return where_; }
  const ComponentSchema& schema() const { return *schema_; }

  // The recipe's value, or the schema's default. Asking for a key the schema does
  // not declare, or with the wrong type, is a programming error: it throws
  // std::logic_error (the host turns it into an Internal status at the factory
  // boundary). Int options read as float are converted.
  bool GetBool(absl::string_view key) const;
  std::int64_t GetInt(absl::string_view key) const;
  double GetFloat(absl::string_view key) const;
  const std::string& GetString(absl::string_view key) const;
  const std::vector<std::string>& GetStringList(absl::string_view key) const;
  const std::vector<double>& GetFloatList(absl::string_view key) const;

  // Whether the recipe sets `key` explicitly.
  bool Has(absl::string_view key) const;
  // Keys read through the getters so far.
  const std::set<std::string, std::less<>>& read_keys() const { return read_keys_; }
  // Keys the recipe set that no getter has read (a plugin that ignores an option).
  std::vector<std::string> UnreadKeys() const;

  // InvalidArgument "<where>: <key>: <message>" for a factory's own checks.
  absl::Status Error(absl::string_view key, absl::string_view message) const;

 private:
  const OptionValue& Lookup(absl::string_view key, OptionType type) const;

  std::string type_;
  const ComponentSchema* schema_;
  std::map<std::string, OptionValue, std::less<>> values_;
  std::string where_;
  mutable std::set<std::string, std::less<>> read_keys_;
};

}  // namespace posttrain
