#include "value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"

namespace posttrain::chat {

const Value* Object::Find(const Value& key) const {
  for (const auto& [k, v] : items) {
    if (k.Equals(key)) return &v;
  }
  return nullptr;
}

Value* Object::Find(const Value& key) {
  for (auto& [k, v] : items) {
    if (k.Equals(key)) return &v;
  }
  return nullptr;
}

void Object::Set(const Value& key, Value value) {
  if (Value* existing = Find(key)) {
    *existing = std::move(value);
  } else {
    items.emplace_back(key, std::move(value));
  }
}

Value Value::Function(std::string name, Callable fn) {
  Value v(Kind::kCallable);
  v.string_ = std::move(name);
  v.callable_ = std::make_shared<Callable>(std::move(fn));
  return v;
}

Value Value::FromJson(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return None();
    case nlohmann::ordered_json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value(static_cast<std::int64_t>(j.get<std::int64_t>()));
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Value(static_cast<std::int64_t>(j.get<std::uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      Array a;
      a.reserve(j.size());
      for (const auto& e : j) a.push_back(FromJson(e));
      return Value(std::move(a));
    }
    case nlohmann::ordered_json::value_t::object: {
      Object o;
      o.items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) {
        o.items.emplace_back(Value(it.key()), FromJson(it.value()));
      }
      return Value(std::move(o));
    }
    default: return Undefined("binary");
  }
}

Value Value::Call(Arguments& args) const {
  if (kind_ != Kind::kCallable) {
    if (is_undefined()) throw TemplateError(string_.empty() ? "undefined value called" : string_);
    throw TemplateError(absl::StrCat("'", TypeName(), "' object is not callable"));
  }
  return (*callable_)(args);
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool:
    case Kind::kInt: return int_ != 0;
    case Kind::kFloat: return float_ != 0;
    case Kind::kString: return !string_.empty();
    case Kind::kArray: return !array_->empty();
    case Kind::kObject: return !object_->items.empty();
    case Kind::kCallable: return true;
  }
  return false;
}

std::string Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kArray: return "list";
    case Kind::kObject: return object_->is_namespace ? "Namespace" : "dict";
    case Kind::kCallable: return "function";
  }
  return "object";
}

std::string PythonFloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  // Shortest round-trip digits and the decimal exponent, then Python's layout.
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string s(buf, end);
  bool negative = s[0] == '-';
  if (negative) s.erase(0, 1);
  std::size_t e = s.find('e');
  int exponent = std::stoi(s.substr(e + 1));
  std::string digits = s.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  std::string out = negative ? "-" : "";
  if (exponent < -4 || exponent >= 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) absl::StrAppend(&out, ".", digits.substr(1));
    char exp[16];
    std::snprintf(exp, sizeof(exp), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += exp;
  } else if (exponent < 0) {
    absl::StrAppend(&out, "0.", std::string(-exponent - 1, '0'), digits);
  } else if (static_cast<int>(digits.size()) <= exponent + 1) {
    absl::StrAppend(&out, digits, std::string(exponent + 1 - digits.size(), '0'), ".0");
  } else {
    absl::StrAppend(&out, digits.substr(0, exponent + 1), ".", digits.substr(exponent + 1));
  }
  return out;
}

std::vector<std::string> CodePoints(const std::string& s) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    n = std::min(n, s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

namespace {

// Python's repr of a str: single quotes unless the text holds ' and no ".
std::string ReprString(const std::string& s) {
  char quote = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c == quote) {
          out += '\\';
          out += static_cast<char>(c);
        } else if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\x%02x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += quote;
  return out;
}

void WriteJsonString(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

}  // namespace

std::string Value::Str() const {
  switch (kind_) {
    case Kind::kUndefined: return "";
    case Kind::kString: return string_;
    default: return Repr();
  }
}

std::string Value::Repr() const {
  switch (kind_) {
    case Kind::kUndefined: return "";
    case Kind::kNone: return "None";
    case Kind::kBool: return int_ ? "True" : "False";
    case Kind::kInt: return std::to_string(int_);
    case Kind::kFloat: return PythonFloatRepr(float_);
    case Kind::kString: return ReprString(string_);
    case Kind::kArray: {
      std::string out = tuple_ ? "(" : "[";
      for (std::size_t i = 0; i < array_->size(); ++i) {
        if (i) out += ", ";
        out += (*array_)[i].Repr();
      }
      if (tuple_) return out + (array_->size() == 1 ? ",)" : ")");
      return out + "]";
    }
    case Kind::kObject: {
      if (object_->is_namespace) return "<Namespace>";
      std::string out = "{";
      bool first = true;
      for (const auto& [k, v] : object_->items) {
        if (!first) out += ", ";
        first = false;
        absl::StrAppend(&out, k.Repr(), ": ", v.Repr());
      }
      return out + "}";
    }
    case Kind::kCallable: return absl::StrCat("<function ", string_, ">");
  }
  return "";
}

void Value::WriteJson(std::string& out, std::optional<int> indent, int depth) const {
  auto newline = [&](int d) {
    out += '\n';
    out.append(static_cast<std::size_t>(*indent) * d, ' ');
  };
  switch (kind_) {
    case Kind::kUndefined:
      throw TemplateError("Object of type Undefined is not JSON serializable");
    case Kind::kCallable:
      throw TemplateError("Object of type function is not JSON serializable");
    case Kind::kNone: out += "null"; return;
    case Kind::kBool: out += int_ ? "true" : "false"; return;
    case Kind::kInt: out += std::to_string(int_); return;
    case Kind::kFloat:
      if (std::isnan(float_)) out += "NaN";
      else if (std::isinf(float_)) out += float_ > 0 ? "Infinity" : "-Infinity";
      else out += PythonFloatRepr(float_);
      return;
    case Kind::kString: WriteJsonString(out, string_); return;
    case Kind::kArray: {
      if (array_->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (std::size_t i = 0; i < array_->size(); ++i) {
        if (i) out += indent ? "," : ", ";
        if (indent) newline(depth + 1);
        (*array_)[i].WriteJson(out, indent, depth + 1);
      }
      if (indent) newline(depth);
      out += ']';
      return;
    }
    case Kind::kObject: {
      if (object_->items.empty()) {
        out += "{}";
        return;
      }
      out += '{';
      bool first = true;
      for (const auto& [k, v] : object_->items) {
        if (!first) out += indent ? "," : ", ";
        first = false;
        if (indent) newline(depth + 1);
        // json.dumps turns scalar keys into strings.
        if (k.is_string()) WriteJsonString(out, k.string());
        else if (k.is_bool()) WriteJsonString(out, k.int_value() ? "true" : "false");
        else if (k.is_none()) WriteJsonString(out, "null");
        else WriteJsonString(out, k.Repr());
        out += ": ";
        v.WriteJson(out, indent, depth + 1);
      }
      if (indent) newline(depth);
      out += '}';
      return;
    }
  }
}

std::string Value::ToJson(std::optional<int> indent) const {
  std::string out;
  WriteJson(out, indent, 0);
  return out;
}

nlohmann::ordered_json Value::ToJsonValue() const {
  switch (kind_) {
    case Kind::kNone: return nullptr;
    case Kind::kBool: return int_ != 0;
    case Kind::kInt: return int_;
    case Kind::kFloat: return float_;
    case Kind::kString: return string_;
    case Kind::kArray: {
      nlohmann::ordered_json a = nlohmann::ordered_json::array();
      for (const Value& v : *array_) a.push_back(v.ToJsonValue());
      return a;
    }
    case Kind::kObject: {
      nlohmann::ordered_json o = nlohmann::ordered_json::object();
      for (const auto& [k, v] : object_->items) o[k.is_string() ? k.string() : k.Repr()] = v.ToJsonValue();
      return o;
    }
    default: throw TemplateError(absl::StrCat("Object of type ", TypeName(), " is not JSON serializable"));
  }
}

bool Value::Equals(const Value& other) const {
  if (is_number() && other.is_number()) {
    if (is_int() && other.is_int()) return int_ == other.int_;
    return number() == other.number();
  }
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return true;
    case Kind::kString: return string_ == other.string_;
    case Kind::kArray: {
      if (array_ == other.array_) return true;
      if (array_->size() != other.array_->size()) return false;
      for (std::size_t i = 0; i < array_->size(); ++i) {
        if (!(*array_)[i].Equals((*other.array_)[i])) return false;
      }
      return true;
    }
    case Kind::kObject: {
      if (object_ == other.object_) return true;
      if (object_->items.size() != other.object_->items.size()) return false;
      for (const auto& [k, v] : object_->items) {
        const Value* o = other.object_->Find(k);
        if (o == nullptr || !v.Equals(*o)) return false;
      }
      return true;
    }
    case Kind::kCallable: return callable_ == other.callable_;
    default: return false;
  }
}

bool Value::Less(const Value& other) const {
  if (is_number() && other.is_number()) {
    if (is_int() && other.is_int()) return int_ < other.int_;
    return number() < other.number();
  }
  if (is_string() && other.is_string()) return string_ < other.string_;  // code point order = UTF-8 byte order
  if (is_array() && other.is_array()) {
    const Array& a = *array_;
    const Array& b = *other.array_;
    for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
      if (a[i].Less(b[i])) return true;
      if (b[i].Less(a[i])) return false;
    }
    return a.size() < b.size();
  }
  throw TemplateError(absl::StrCat("'<' not supported between instances of '", TypeName(), "' and '",
                                   other.TypeName(), "'"));
}

Value Arguments::Get(std::size_t index, const std::string& name, Value fallback) const {
  if (index < positional.size()) return positional[index];
  for (const auto& [k, v] : keyword) {
    if (k == name) return v;
  }
  return fallback;
}

bool Arguments::Has(std::size_t index, const std::string& name) const {
  if (index < positional.size()) return true;
  for (const auto& [k, v] : keyword) {
    if (k == name) return true;
  }
  return false;
}

void Arguments::Check(const std::string& function, std::size_t max_positional,
                      std::initializer_list<const char*> keywords) const {
  if (positional.size() > max_positional) {
    throw TemplateError(absl::StrCat(function, "() takes at most ", max_positional, " arguments (",
                                     positional.size(), " given)"));
  }
  for (const auto& [k, v] : keyword) {
    bool known = false;
    for (const char* name : keywords) known = known || k == name;
    if (!known) throw TemplateError(absl::StrCat(function, "() got an unexpected keyword argument '", k, "'"));
  }
}

}  // namespace posttrain::chat
