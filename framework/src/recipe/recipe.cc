#include "posttrain/recipe/recipe.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "posttrain/core/did_you_mean.h"
#include "toml++/toml.h"

namespace posttrain {
namespace {

// Source name given to values parsed from command-line overrides.
constexpr const char* kCommandLine = "<command line>";

struct TableSpec {
  const char* name;
  ComponentKind kind;
  bool required;
  bool array;  // [[rewards]]
};

constexpr TableSpec kTables[] = {
    {"data", ComponentKind::kDataAdapter, true, false},
    {"eval_data", ComponentKind::kDataAdapter, false, false},
    {"sampler", ComponentKind::kSampler, false, false},
    {"rewards", ComponentKind::kRewardFunction, false, true},
    {"trainer", ComponentKind::kTrainer, true, false},
    {"peft", ComponentKind::kAdapter, false, false},  // TRL's peft_config: an adapter (LoRA)
};

// Top-level settings (not components).
const ComponentSchema& TopLevelSchema() {
  static const ComponentSchema* schema = new ComponentSchema(
      ComponentSchema("Run-level settings.")
          .String("output_dir", "", "Run directory (default: runs/<recipe file stem>).")
          .Int("seed", 42, "Seed for data order, sampling and initialisation.")
          .Bool("overwrite_output_dir", false,
                "Reuse an output_dir that already holds a run (its logs are replaced).")
          .StringList("plugin_dirs", {},
                      "Extra plugin directories or .so files, besides the built-in ones and "
                      "POSTTRAIN_PLUGIN_PATH."));
  return *schema;
}

// [model]: the policy the engine loads (not a plugin).
const ComponentSchema& ModelTableSchema() {
  static const ComponentSchema* schema = new ComponentSchema(
      ComponentSchema("The policy model: a Hugging Face model directory.")
          .Required("path", OptionType::kString,
                    "Model directory (config.json, safetensors, tokenizer files).")
          .String("dtype", "float32", "Parameter dtype.", {"float32", "bfloat16"})
          .String("tokenizer", "", "Tokenizer directory or file (default: the model directory).")
          .String("adapter", "",
                  "A saved adapter directory (PEFT's adapter_config.json + adapter_model.safetensors) to load onto the "
                  "model and train further (instead of a new [peft] adapter)."));
  return *schema;
}

// Keys the host reads in component tables, besides the plugin's own options.
const ComponentSchema& HostKeys(const TableSpec& spec) {
  static const ComponentSchema* component =
      new ComponentSchema(ComponentSchema("").Required("type", OptionType::kString,
                                                       "Registered name of the component."));
  static const ComponentSchema* data = new ComponentSchema(
      ComponentSchema("")
          .Required("type", OptionType::kString, "Registered name of the data adapter.")
          .Float("eval_size", 0.0,
                 "Hold out the last examples for evaluation: a fraction (< 1) or a count (>= 1)."));
  if (std::string(spec.name) == "data") return *data;
  static const ComponentSchema* reward = new ComponentSchema(
      ComponentSchema("")
          .Required("type", OptionType::kString, "Registered name of the reward function.")
          .Float("weight", 1.0, "Weight of this reward in the total (TRL's reward_weights).")
          .String("name", "", "Name in metrics (rewards/<name>/mean); default: the type.")
          .String("on_error", "stop",
                  "A failing call, a timeout or a NaN: 'stop' the step with a message naming the reward and "
                  "the sample, or 'skip' those samples (they get no score from this reward; counted in "
                  "rewards/<name>/skipped).",
                  {"stop", "skip"}));
  return spec.array ? *reward : *component;
}

const TableSpec* FindTable(absl::string_view name) {
  for (const TableSpec& spec : kTables) {
    if (name == spec.name) return &spec;
  }
  return nullptr;
}

std::vector<std::string> TopLevelNames() {
  std::vector<std::string> names = TopLevelSchema().Names();
  names.push_back("model");
  for (const TableSpec& spec : kTables) names.push_back(spec.name);
  return names;
}

absl::string_view TomlTypeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    default: return "date/time";
  }
}

std::string ToOptionValueUnchecked(const toml::node& node, const OptionSpec& spec, OptionValue* out);

// Converts a TOML value to an option of `type` within its range; "" on success,
// else what was expected.
std::string ToOptionValue(const toml::node& node, const OptionSpec& spec, OptionValue* out) {
  if (std::string error = ToOptionValueUnchecked(node, spec, out); !error.empty()) return error;
  return spec.CheckValue(*out);
}

std::string ToOptionValueUnchecked(const toml::node& node, const OptionSpec& spec, OptionValue* out) {
  auto expected = [&] {
    return absl::StrCat("expected ", OptionTypeName(spec.type), ", got ", TomlTypeName(node));
  };
  switch (spec.type) {
    case OptionType::kBool:
      if (auto v = node.value_exact<bool>()) { *out = *v; return ""; }
      return expected();
    case OptionType::kInt:
      if (auto v = node.value_exact<std::int64_t>()) { *out = *v; return ""; }
      return expected();
    case OptionType::kFloat:
      if (auto v = node.value_exact<double>()) { *out = *v; return ""; }
      if (auto v = node.value_exact<std::int64_t>()) { *out = static_cast<double>(*v); return ""; }
      return expected();
    case OptionType::kString:
      if (auto v = node.value_exact<std::string>()) {
        if (!spec.choices.empty() &&
            std::find(spec.choices.begin(), spec.choices.end(), *v) == spec.choices.end()) {
          return absl::StrCat("'", *v, "' is not one of: ", absl::StrJoin(spec.choices, ", "),
                              DidYouMeanSuffix(*v, spec.choices));
        }
        *out = *v;
        return "";
      }
      return expected();
    case OptionType::kStringList: {
      // A single string is a list of one (target_modules = "all-linear").
      if (auto v = node.value_exact<std::string>()) {
        *out = std::vector<std::string>{*v};
        return "";
      }
      const toml::array* array = node.as_array();
      if (array == nullptr) return expected();
      std::vector<std::string> values;
      for (const toml::node& item : *array) {
        auto v = item.value_exact<std::string>();
        if (!v) return absl::StrCat("expected a list of strings, found a ", TomlTypeName(item));
        values.push_back(*v);
      }
      *out = std::move(values);
      return "";
    }
    case OptionType::kFloatList: {
      // A number stands for a list of one (TRL's `float | list[float]` options).
      if (auto d = node.value_exact<double>()) {
        *out = std::vector<double>{*d};
        return "";
      }
      if (auto i = node.value_exact<std::int64_t>()) {
        *out = std::vector<double>{static_cast<double>(*i)};
        return "";
      }
      const toml::array* array = node.as_array();
      if (array == nullptr) return expected();
      std::vector<double> values;
      for (const toml::node& item : *array) {
        if (auto d = item.value_exact<double>()) {
          values.push_back(*d);
        } else if (auto i = item.value_exact<std::int64_t>()) {
          values.push_back(static_cast<double>(*i));
        } else {
          return absl::StrCat("expected a list of numbers, found a ", TomlTypeName(item));
        }
      }
      *out = std::move(values);
      return "";
    }
  }
  return "unsupported option type";
}

// Inserts `value` at `path` (dotted; numeric parts index arrays of tables).
std::string SetPath(toml::table& root, const std::vector<std::string>& path, toml::node&& value) {
  toml::node* node = &root;
  for (size_t i = 0; i < path.size(); ++i) {
    const std::string& part = path[i];
    const bool last = i + 1 == path.size();
    if (toml::table* table = node->as_table()) {
      if (last) {
        table->insert_or_assign(part, std::move(value));
        return "";
      }
      toml::node* child = table->get(part);
      if (child == nullptr) {
        table->insert(part, toml::table{});
        child = table->get(part);
      }
      node = child;
    } else if (toml::array* array = node->as_array()) {
      size_t index = 0;
      if (!absl::SimpleAtoi(part, &index) || index >= array->size()) {
        return absl::StrCat("'", part, "' is not an index of an array of ", array->size(),
                            " entries");
      }
      if (last) {
        array->replace(array->cbegin() + static_cast<std::ptrdiff_t>(index), std::move(value));
        return "";
      }
      node = array->get(index);
    } else {
      return absl::StrCat("'", absl::StrJoin(path.begin(), path.begin() + i, "."),
                          "' is a value, not a table");
    }
  }
  return "empty key";
}

}  // namespace

struct Recipe::Impl {
  std::string source_name;
  toml::table table;
};

Recipe::Recipe(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Recipe::Recipe(Recipe&&) noexcept = default;
Recipe& Recipe::operator=(Recipe&&) noexcept = default;
Recipe::~Recipe() = default;

absl::StatusOr<Recipe> Recipe::LoadFile(const std::string& path,
                                        const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open recipe '", path, "'"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return Parse(buffer.str(), path, overrides);
}

absl::StatusOr<Recipe> Recipe::Parse(absl::string_view text, std::string source_name,
                                     const std::vector<std::string>& overrides) {
  auto impl = std::make_unique<Impl>();
  impl->source_name = source_name;
  try {
    impl->table = toml::parse(std::string_view(text.data(), text.size()), source_name);
  } catch (const toml::parse_error& e) {
    const auto& begin = e.source().begin;
    return absl::InvalidArgumentError(absl::StrCat(source_name, ":", begin.line, ":",
                                                   begin.column, ": TOML syntax error: ",
                                                   std::string(e.description())));
  }
  std::vector<std::string> errors;
  for (const std::string& item : overrides) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      errors.push_back(absl::StrCat("command line: override '", item,
                                    "' is not of the form table.key=value"));
      continue;
    }
    const std::string key = item.substr(0, eq);
    const std::string value_text = item.substr(eq + 1);
    toml::table parsed;
    try {
      parsed = toml::parse(std::string_view(absl::StrCat("v = ", value_text)), std::string_view(kCommandLine));
    } catch (const toml::parse_error&) {
      // A bare word: the string itself — unless it cannot be one (invalid UTF-8,
      // control characters), found by fuzzing.
      try {
        parsed = toml::parse(std::string_view(absl::StrCat("v = ", FormatOptionValue(value_text))),
                             std::string_view(kCommandLine));
      } catch (const toml::parse_error& e) {
        errors.push_back(absl::StrCat("command line: override '", absl::CHexEscape(item),
                                      "': the value is neither a TOML value nor text (", std::string(e.description()), ")"));
        continue;
      }
    }
    toml::node* value = parsed.get("v");
    if (value == nullptr) {
      errors.push_back(absl::StrCat("command line: override '", absl::CHexEscape(item), "' has no value"));
      continue;
    }
    std::vector<std::string> path = absl::StrSplit(key, '.');
    std::string error = SetPath(impl->table, path, std::move(*value));
    if (!error.empty()) {
      errors.push_back(absl::StrCat("command line: override '", item, "': ", error));
    }
  }
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
  return Recipe(std::move(impl));
}

const std::string& Recipe::source_name() const { return impl_->source_name; }

std::string Recipe::output_dir() const {
  if (auto v = impl_->table["output_dir"].value_exact<std::string>(); v && !v->empty()) return *v;
  std::string stem = impl_->source_name;
  if (size_t slash = stem.find_last_of('/'); slash != std::string::npos) stem = stem.substr(slash + 1);
  if (size_t dot = stem.find_last_of('.'); dot != std::string::npos) stem = stem.substr(0, dot);
  return absl::StrCat("runs/", stem.empty() ? "run" : stem);
}

std::int64_t Recipe::seed() const { return impl_->table["seed"].value_exact<std::int64_t>().value_or(42); }

double Recipe::eval_size() const {
  return impl_->table["data"]["eval_size"].value<double>().value_or(0.0);
}

bool Recipe::overwrite_output_dir() const {
  return impl_->table["overwrite_output_dir"].value_exact<bool>().value_or(false);
}

std::vector<std::string> Recipe::plugin_dirs() const {
  std::vector<std::string> dirs;
  if (const toml::array* array = impl_->table["plugin_dirs"].as_array()) {
    for (const toml::node& item : *array) {
      if (auto v = item.value_exact<std::string>()) dirs.push_back(*v);
    }
  }
  return dirs;
}

namespace {

// Where a key stands: the key itself, or (for keys added by an override, which
// have no position) its value.
const toml::source_region* KeyRegion(const toml::key& key, const toml::node& value) {
  return key.source().begin.line > 0 ? &key.source() : &value.source();
}

class Validator {
 public:
  Validator(const std::string& source, const Registry& registry)
      : source_(source), registry_(registry) {}

  void Error(const toml::node* node, absl::string_view key_path, absl::string_view message) {
    ErrorAt(node != nullptr ? &node->source() : nullptr, key_path, message);
  }

  // At the key itself (for unknown keys), rather than at its value.
  void ErrorAt(const toml::source_region* at, absl::string_view key_path,
               absl::string_view message) {
    std::string where = source_;
    int line = 0, column = 0;
    if (at != nullptr) {
      const toml::source_region& region = *at;
      if (region.path != nullptr && *region.path == kCommandLine) {
        where = absl::StrCat(source_, " (command-line override)");
      } else if (region.begin.line > 0) {
        line = static_cast<int>(region.begin.line);
        column = static_cast<int>(region.begin.column);
        where = absl::StrCat(source_, ":", line, ":", column);
      }
    }
    errors_.push_back({line, column, absl::StrCat(where, ": ", key_path, ": ", message)});
  }

  // Checks one option table against `schemas` (host keys first, then the plugin's).
  void CheckOptions(const toml::table& table, absl::string_view path, const toml::node* table_node,
                    const std::vector<const ComponentSchema*>& schemas) {
    std::vector<std::string> known;
    for (const ComponentSchema* schema : schemas) {
      for (const std::string& name : schema->Names()) known.push_back(name);
    }
    for (const auto& [key, node] : table) {
      const OptionSpec* spec = nullptr;
      for (const ComponentSchema* schema : schemas) {
        if ((spec = schema->Find(std::string(key.str()))) != nullptr) break;
      }
      const std::string key_path = absl::StrCat(path, ".", std::string(key.str()));
      if (spec == nullptr) {
        ErrorAt(KeyRegion(key, node), key_path,
                absl::StrCat("unknown option", DidYouMeanSuffix(std::string(key.str()), known)));
        continue;
      }
      OptionValue value;
      if (std::string error = ToOptionValue(node, *spec, &value); !error.empty()) {
        Error(&node, key_path, error);
      }
    }
    for (const ComponentSchema* schema : schemas) {
      for (const OptionSpec& spec : schema->options()) {
        if (!spec.default_value.has_value() && !table.contains(spec.name)) {
          Error(table_node, absl::StrCat(path, ".", spec.name),
                absl::StrCat("required option (", OptionTypeName(spec.type), ": ", spec.doc,
                             ") is missing"));
        }
      }
    }
  }

  void CheckComponent(const TableSpec& spec, const toml::node& node, std::string path) {
    const toml::table* table = node.as_table();
    if (table == nullptr) {
      Error(&node, path, absl::StrCat("expected a table, got ", TomlTypeName(node)));
      return;
    }
    const toml::node* type_node = table->get("type");
    const auto type = type_node != nullptr ? type_node->value_exact<std::string>() : std::nullopt;
    if (!type) {
      std::vector<std::string> names = registry_.Names(spec.kind);
      Error(type_node != nullptr ? type_node : &node, absl::StrCat(path, ".type"),
            absl::StrCat(type_node == nullptr ? "missing" : "expected a string",
                         ": the registered name of a ", ComponentKindName(spec.kind),
                         " (one of: ", absl::StrJoin(names, ", "), ")"));
      CheckOptions(*table, path, &node, {&HostKeys(spec)});
      return;
    }
    const RegisteredComponent* component = registry_.Find(spec.kind, *type);
    if (component == nullptr) {
      const absl::Status status =
          registry_.UnknownName(spec.kind, *type, "");  // message starts with ": "
      Error(type_node, absl::StrCat(path, ".type"), status.message().substr(2));
      return;
    }
    CheckOptions(*table, path, &node, {&HostKeys(spec), &component->registration.schema});
  }

  absl::Status Run(const toml::table& root) {
    std::vector<std::string> top_names = TopLevelNames();
    for (const auto& [key, node] : root) {
      if (FindTable(std::string(key.str())) != nullptr) continue;
      if (key.str() == "model") {
        if (const toml::table* table = node.as_table()) {
          CheckOptions(*table, "model", &node, {&ModelTableSchema()});
        } else {
          Error(&node, "model", absl::StrCat("expected a table, got ", TomlTypeName(node)));
        }
        continue;
      }
      const OptionSpec* spec = TopLevelSchema().Find(std::string(key.str()));
      if (spec == nullptr) {
        ErrorAt(KeyRegion(key, node), std::string(key.str()),
              absl::StrCat("unknown top-level key", DidYouMeanSuffix(std::string(key.str()), top_names),
                           "; known: ", absl::StrJoin(top_names, ", ")));
        continue;
      }
      OptionValue value;
      if (std::string error = ToOptionValue(node, *spec, &value); !error.empty()) {
        Error(&node, std::string(key.str()), error);
      }
    }
    for (const TableSpec& spec : kTables) {
      const toml::node* node = root.get(spec.name);
      if (node == nullptr) {
        if (spec.required) {
          Error(nullptr, spec.name,
                absl::StrCat("missing table [", spec.name, "] (a ", ComponentKindName(spec.kind),
                             "; known: ", absl::StrJoin(registry_.Names(spec.kind), ", "), ")"));
        }
        continue;
      }
      if (spec.array) {
        const toml::array* array = node->as_array();
        if (array == nullptr || !array->is_array_of_tables()) {
          Error(node, spec.name,
                absl::StrCat("expected an array of tables ([[", spec.name, "]])"));
          continue;
        }
        for (size_t i = 0; i < array->size(); ++i) {
          CheckComponent(spec, *array->get(i), absl::StrCat(spec.name, ".", i));
        }
      } else {
        CheckComponent(spec, *node, spec.name);
      }
    }
    if (errors_.empty()) return absl::OkStatus();
    std::stable_sort(errors_.begin(), errors_.end(), [](const Located& a, const Located& b) {
      return std::make_pair(a.line, a.column) < std::make_pair(b.line, b.column);
    });
    std::vector<std::string> lines;
    for (const Located& error : errors_) lines.push_back(error.text);
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": ", errors_.size(), errors_.size() == 1 ? " error" : " errors",
                     " in the recipe:\n  ", absl::StrJoin(lines, "\n  ")));
  }

 private:
  const std::string& source_;
  const Registry& registry_;
  struct Located {
    int line, column;
    std::string text;
  };
  std::vector<Located> errors_;
};

absl::StatusOr<ComponentConfig> MakeConfig(const toml::table& table, const TableSpec& spec,
                                           std::string where, const Registry& registry) {
  auto type = table["type"].value_exact<std::string>();
  if (!type) return absl::InvalidArgumentError(absl::StrCat(where, ": missing type"));
  const RegisteredComponent* component = registry.Find(spec.kind, *type);
  if (component == nullptr) return registry.UnknownName(spec.kind, *type, where);
  const ComponentSchema& schema = component->registration.schema;
  std::map<std::string, OptionValue> values;
  for (const auto& [key, node] : table) {
    const OptionSpec* option = schema.Find(std::string(key.str()));
    if (option == nullptr) continue;  // host keys (type, weight, name)
    OptionValue value;
    if (std::string error = ToOptionValue(node, *option, &value); !error.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", std::string(key.str()), ": ", error));
    }
    values.emplace(std::string(key.str()), std::move(value));
  }
  return ComponentConfig(*type, &schema, std::move(values), std::move(where));
}

}  // namespace

absl::Status Recipe::Validate(const Registry& registry) const {
  return Validator(impl_->source_name, registry).Run(impl_->table);
}

bool Recipe::HasComponent(absl::string_view table) const {
  return impl_->table.contains(std::string(table));
}

std::string Recipe::ComponentType(absl::string_view table) const {
  return impl_->table[std::string(table)]["type"].value<std::string>().value_or("");
}

absl::StatusOr<ComponentConfig> Recipe::Component(absl::string_view table_name,
                                                  const Registry& registry) const {
  const TableSpec* spec = FindTable(table_name);
  const toml::table* table = impl_->table[std::string(table_name)].as_table();
  if (spec == nullptr || spec->array || table == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(impl_->source_name, ": no component table [", table_name, "]"));
  }
  return MakeConfig(*table, *spec, absl::StrCat(impl_->source_name, " [", table_name, "]"),
                    registry);
}

absl::StatusOr<std::optional<ComponentConfig>> Recipe::Model() const {
  const toml::table* table = impl_->table["model"].as_table();
  if (table == nullptr) return std::optional<ComponentConfig>();
  std::map<std::string, OptionValue> values;
  const ComponentSchema& schema = ModelTableSchema();
  for (const auto& [key, node] : *table) {
    const OptionSpec* option = schema.Find(std::string(key.str()));
    if (option == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(impl_->source_name, ": model.", std::string(key.str()), ": unknown option"));
    }
    OptionValue value;
    if (std::string error = ToOptionValue(node, *option, &value); !error.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(impl_->source_name, ": model.", std::string(key.str()), ": ", error));
    }
    values.emplace(std::string(key.str()), std::move(value));
  }
  if (values.count("path") == 0) return absl::InvalidArgumentError(absl::StrCat(impl_->source_name, ": model.path is missing"));
  return std::optional<ComponentConfig>(
      ComponentConfig("model", &schema, std::move(values), absl::StrCat(impl_->source_name, " [model]")));
}

absl::StatusOr<std::vector<Recipe::RewardEntry>> Recipe::Rewards(const Registry& registry) const {
  std::vector<RewardEntry> rewards;
  const toml::array* array = impl_->table["rewards"].as_array();
  if (array == nullptr) return rewards;
  const TableSpec& spec = *FindTable("rewards");
  for (size_t i = 0; i < array->size(); ++i) {
    const toml::table* table = array->get(i)->as_table();
    if (table == nullptr) return absl::InvalidArgumentError("rewards must be tables");
    POSTTRAIN_ASSIGN_OR_RETURN(
        ComponentConfig config,
        MakeConfig(*table, spec, absl::StrCat(impl_->source_name, " [[rewards]] #", i), registry));
    std::string name = (*table)["name"].value_exact<std::string>().value_or("");
    if (name.empty()) name = config.type();
    for (const RewardEntry& other : rewards) {
      if (other.name == name) {
        return absl::InvalidArgumentError(
            absl::StrCat(impl_->source_name, ": rewards.", i, ": two rewards are named '", name,
                         "'; give one a different `name`"));
      }
    }
    double weight = (*table)["weight"].value<double>().value_or(1.0);
    const bool skip_errors = (*table)["on_error"].value_exact<std::string>().value_or("stop") == "skip";
    rewards.push_back(RewardEntry{std::move(name), weight, skip_errors, std::move(config)});
  }
  return rewards;
}

std::string Recipe::ResolvedToml(const Registry& registry) const {
  toml::table resolved = impl_->table;
  auto fill = [&](toml::table& table, ComponentKind kind) {
    auto type = table["type"].value_exact<std::string>();
    if (!type) return;
    const RegisteredComponent* component = registry.Find(kind, *type);
    if (component == nullptr) return;
    for (const OptionSpec& option : component->registration.schema.options()) {
      if (table.contains(option.name) || !option.default_value) continue;
      toml::table parsed =
          toml::parse(std::string_view(absl::StrCat("v = ", FormatOptionValue(*option.default_value))));
      table.insert(option.name, std::move(*parsed.get("v")));
    }
  };
  for (const TableSpec& spec : kTables) {
    toml::node* node = resolved.get(spec.name);
    if (node == nullptr) continue;
    if (toml::table* table = node->as_table()) fill(*table, spec.kind);
    if (toml::array* array = node->as_array()) {
      for (toml::node& item : *array) {
        if (toml::table* table = item.as_table()) fill(*table, spec.kind);
      }
    }
  }
  if (!resolved.contains("output_dir")) resolved.insert("output_dir", output_dir());
  if (!resolved.contains("seed")) resolved.insert("seed", seed());
  std::ostringstream out;
  out << "# Resolved from " << impl_->source_name
      << " (overrides applied, defaults filled in).\n"
      << resolved << "\n";
  return out.str();
}

}  // namespace posttrain
