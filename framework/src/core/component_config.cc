#include "posttrain/core/component_config.h"

#include <cmath>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace posttrain {
namespace {

// A TOML basic string.
std::string Quote(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string FormatDouble(double v) {
  std::string s = absl::StrCat(v);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

}  // namespace

absl::string_view OptionTypeName(OptionType type) {
  switch (type) {
    case OptionType::kBool: return "bool";
    case OptionType::kInt: return "int";
    case OptionType::kFloat: return "float";
    case OptionType::kString: return "string";
    case OptionType::kStringList: return "list of strings";
    case OptionType::kFloatList: return "list of floats";
  }
  return "?";
}

std::string FormatOptionValue(const OptionValue& value) {
  struct Visitor {
    std::string operator()(bool v) const { return v ? "true" : "false"; }
    std::string operator()(std::int64_t v) const { return absl::StrCat(v); }
    std::string operator()(double v) const { return FormatDouble(v); }
    std::string operator()(const std::string& v) const { return Quote(v); }
    std::string operator()(const std::vector<std::string>& v) const {
      return absl::StrCat("[", absl::StrJoin(v, ", ", [](std::string* out, const std::string& s) {
                            out->append(Quote(s));
                          }), "]");
    }
    std::string operator()(const std::vector<double>& v) const {
      return absl::StrCat("[", absl::StrJoin(v, ", ", [](std::string* out, double d) {
                            out->append(FormatDouble(d));
                          }), "]");
    }
  };
  return std::visit(Visitor{}, value);
}

ComponentSchema& ComponentSchema::Add(OptionSpec spec) {
  if (Find(spec.name) != nullptr) {
    throw std::logic_error(absl::StrCat("option '", spec.name, "' declared twice"));
  }
  options_.push_back(std::move(spec));
  return *this;
}

ComponentSchema& ComponentSchema::Bool(std::string name, bool v, std::string doc) {
  return Add({std::move(name), OptionType::kBool, OptionValue(v), std::move(doc), {}});
}
ComponentSchema& ComponentSchema::Int(std::string name, std::int64_t v, std::string doc) {
  return Add({std::move(name), OptionType::kInt, OptionValue(v), std::move(doc), {}});
}
ComponentSchema& ComponentSchema::Float(std::string name, double v, std::string doc) {
  return Add({std::move(name), OptionType::kFloat, OptionValue(v), std::move(doc), {}});
}
ComponentSchema& ComponentSchema::String(std::string name, std::string v, std::string doc,
                                         std::vector<std::string> choices) {
  return Add({std::move(name), OptionType::kString, OptionValue(std::move(v)), std::move(doc),
              std::move(choices)});
}
ComponentSchema& ComponentSchema::StringList(std::string name, std::vector<std::string> v,
                                             std::string doc) {
  return Add(
      {std::move(name), OptionType::kStringList, OptionValue(std::move(v)), std::move(doc), {}});
}
ComponentSchema& ComponentSchema::FloatList(std::string name, std::vector<double> v,
                                            std::string doc) {
  return Add(
      {std::move(name), OptionType::kFloatList, OptionValue(std::move(v)), std::move(doc), {}});
}
ComponentSchema& ComponentSchema::Required(std::string name, OptionType type, std::string doc) {
  return Add({std::move(name), type, std::nullopt, std::move(doc), {}});
}

namespace {

std::string FormatBound(double v) {
  if (v == static_cast<double>(static_cast<std::int64_t>(v))) return absl::StrCat(static_cast<std::int64_t>(v));
  return absl::StrCat(v);
}

}  // namespace

std::string OptionSpec::RangeText() const {
  std::string range;
  if (min && max) {
    range = absl::StrCat("in ", min_open ? "(" : "[", FormatBound(*min), ", ", FormatBound(*max), max_open ? ")" : "]");
  } else if (min) {
    range = absl::StrCat(min_open ? "> " : ">= ", FormatBound(*min));
  } else if (max) {
    range = absl::StrCat(max_open ? "< " : "<= ", FormatBound(*max));
  }
  if (sentinel && !range.empty()) range = absl::StrCat(range, ", or ", FormatBound(*sentinel));
  return range;
}

std::string OptionSpec::CheckValue(const OptionValue& value) const {
  std::vector<double> numbers;
  if (const auto* i = std::get_if<std::int64_t>(&value)) numbers.push_back(static_cast<double>(*i));
  if (const auto* d = std::get_if<double>(&value)) numbers.push_back(*d);
  if (const auto* list = std::get_if<std::vector<double>>(&value)) numbers = *list;
  for (double v : numbers) {
    if (!std::isfinite(v)) return absl::StrCat("must be a finite number, got ", absl::StrCat(v));
    if (sentinel && v == *sentinel) continue;
    const bool low = min && (min_open ? v <= *min : v < *min);
    const bool high = max && (max_open ? v >= *max : v > *max);
    if (low || high) return absl::StrCat("must be ", RangeText(), ", got ", FormatOptionValue(value));
  }
  return "";
}

ComponentSchema& ComponentSchema::AtLeast(double min) { return Bound(min, false, true); }
ComponentSchema& ComponentSchema::GreaterThan(double min) { return Bound(min, true, true); }
ComponentSchema& ComponentSchema::AtMost(double max) { return Bound(max, false, false); }
ComponentSchema& ComponentSchema::LessThan(double max) { return Bound(max, true, false); }

ComponentSchema& ComponentSchema::OrEqualTo(double sentinel) {
  Bound(0, false, true, /*check_only=*/true).options_.back().sentinel = sentinel;
  return *this;
}

ComponentSchema& ComponentSchema::Bound(double value, bool open, bool lower, bool check_only) {
  if (options_.empty()) throw std::logic_error("a bound before any option");
  OptionSpec& spec = options_.back();
  if (spec.type != OptionType::kInt && spec.type != OptionType::kFloat && spec.type != OptionType::kFloatList) {
    throw std::logic_error(absl::StrCat("option '", spec.name, "' is not numeric: it takes no bounds"));
  }
  if (check_only) return *this;
  (lower ? spec.min : spec.max) = value;
  (lower ? spec.min_open : spec.max_open) = open;
  return *this;
}

ComponentSchema& ComponentSchema::Merge(const ComponentSchema& other) {
  for (const OptionSpec& spec : other.options_) {
    if (Find(spec.name) == nullptr) options_.push_back(spec);
  }
  return *this;
}

const OptionSpec* ComponentSchema::Find(absl::string_view name) const {
  for (const OptionSpec& spec : options_) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

std::vector<std::string> ComponentSchema::Names() const {
  std::vector<std::string> names;
  names.reserve(options_.size());
  for (const OptionSpec& spec : options_) names.push_back(spec.name);
  return names;
}

ComponentConfig::ComponentConfig(std::string type, const ComponentSchema* schema,
                                 std::map<std::string, OptionValue> values, std::string where)
    : type_(std::move(type)),
      schema_(schema),
      values_(values.begin(), values.end()),
      where_(std::move(where)) {}

const OptionValue& ComponentConfig::Lookup(absl::string_view key, OptionType type) const {
  const OptionSpec* spec = schema_ != nullptr ? schema_->Find(key) : nullptr;
  if (spec == nullptr) {
    throw std::logic_error(absl::StrCat(where_, ": the plugin reads option '", key,
                                        "' that its schema does not declare"));
  }
  if (spec->type != type && !(spec->type == OptionType::kInt && type == OptionType::kFloat)) {
    throw std::logic_error(absl::StrCat(where_, ": option '", key, "' is declared as ",
                                        OptionTypeName(spec->type), " but read as ",
                                        OptionTypeName(type)));
  }
  read_keys_.insert(std::string(key));
  auto it = values_.find(key);
  if (it != values_.end()) return it->second;
  if (!spec->default_value.has_value()) {
    throw std::logic_error(absl::StrCat(where_, ": required option '", key,
                                        "' is missing (validation should have caught it)"));
  }
  return *spec->default_value;
}

bool ComponentConfig::GetBool(absl::string_view key) const {
  return std::get<bool>(Lookup(key, OptionType::kBool));
}
std::int64_t ComponentConfig::GetInt(absl::string_view key) const {
  return std::get<std::int64_t>(Lookup(key, OptionType::kInt));
}
double ComponentConfig::GetFloat(absl::string_view key) const {
  const OptionValue& v = Lookup(key, OptionType::kFloat);
  if (const auto* i = std::get_if<std::int64_t>(&v)) return static_cast<double>(*i);
  return std::get<double>(v);
}
const std::string& ComponentConfig::GetString(absl::string_view key) const {
  return std::get<std::string>(Lookup(key, OptionType::kString));
}
const std::vector<std::string>& ComponentConfig::GetStringList(absl::string_view key) const {
  return std::get<std::vector<std::string>>(Lookup(key, OptionType::kStringList));
}
const std::vector<double>& ComponentConfig::GetFloatList(absl::string_view key) const {
  return std::get<std::vector<double>>(Lookup(key, OptionType::kFloatList));
}

bool ComponentConfig::Has(absl::string_view key) const { return values_.count(key) > 0; }

std::vector<std::string> ComponentConfig::UnreadKeys() const {
  std::vector<std::string> unread;
  for (const auto& [key, value] : values_) {
    if (read_keys_.count(key) == 0) unread.push_back(key);
  }
  return unread;
}

absl::Status ComponentConfig::Error(absl::string_view key, absl::string_view message) const {
  return absl::InvalidArgumentError(absl::StrCat(where_, ": ", key, ": ", message));
}

}  // namespace posttrain
