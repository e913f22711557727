// Values of the chat-template interpreter: Python's objects as Jinja2 sees them.
//
// A Value is undefined, None, a bool, an int, a float, a string, a list, a dict
// (insertion-ordered, as Python's), or a callable (a macro, a builtin, a bound
// method). Lists and dicts are shared: copying a Value copies a reference, as in
// Python, so a `namespace()` assigned in a loop is seen outside it.
//
// Text conversions follow Python: Str() is str(x) (what `{{ x }}` prints), Repr() is
// repr(x) (how a string inside a list prints), ToJson() is transformers' `tojson`
// (json.dumps with ensure_ascii=False, insertion order, optional indent).
//
// Internal to framework/src/chat; errors are TemplateError exceptions, turned into
// absl::Status at the Template API (template.h) and never thrown past it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"

namespace posttrain::chat {

// An error while rendering, with the template line it comes from (0: not yet known;
// the statement being rendered fills it in). `raised` marks raise_exception(msg),
// whose message is reported as the template wrote it.
class TemplateError : public std::runtime_error {
 public:
  explicit TemplateError(const std::string& message, int line = 0, bool raised = false)
      : std::runtime_error(message), line_(line), raised_(raised) {}
  int line() const { return line_; }
  bool raised() const { return raised_; }
  void set_line(int line) { line_ = line; }

 private:
  int line_;
  bool raised_;
};

class Value;
struct Arguments;
using Array = std::vector<Value>;
using Callable = std::function<Value(Arguments&)>;

// A dict: keys are strings, ints or other scalars; Python keeps insertion order.
struct Object {
  std::vector<std::pair<Value, Value>> items;
  bool is_namespace = false;  // `namespace()`: attributes may be assigned
  const Value* Find(const Value& key) const;
  Value* Find(const Value& key);
  void Set(const Value& key, Value value);
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kArray, kObject, kCallable };

  Value() = default;  // undefined
  static Value Undefined(std::string hint) {
    Value v;
    v.string_ = std::move(hint);
    return v;
  }
  static Value None() { return Value(Kind::kNone); }
  Value(bool b) : kind_(Kind::kBool), int_(b) {}
  Value(int i) : kind_(Kind::kInt), int_(i) {}
  Value(std::int64_t i) : kind_(Kind::kInt), int_(i) {}
  Value(double d) : kind_(Kind::kFloat), float_(d) {}
  Value(std::string s) : kind_(Kind::kString), string_(std::move(s)) {}
  Value(const char* s) : kind_(Kind::kString), string_(s) {}
  Value(Array a) : kind_(Kind::kArray), array_(std::make_shared<Array>(std::move(a))) {}
  // A tuple: a list that prints as Python's tuple, "(1, 2)" / "(1,)".
  static Value Tuple(Array a) {
    Value v(std::move(a));
    v.tuple_ = true;
    return v;
  }
  Value(Object o) : kind_(Kind::kObject), object_(std::make_shared<Object>(std::move(o))) {}
  static Value Function(std::string name, Callable fn);
  static Value FromJson(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt || kind_ == Kind::kBool; }  // bool is an int
  bool is_number() const { return is_int() || kind_ == Kind::kFloat; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_callable() const { return kind_ == Kind::kCallable; }
  bool is_tuple() const { return tuple_; }

  std::int64_t int_value() const { return int_; }
  double number() const { return kind_ == Kind::kFloat ? float_ : static_cast<double>(int_); }
  const std::string& string() const { return string_; }  // also: an undefined's hint
  Array& array() const { return *array_; }
  Object& object() const { return *object_; }
  const std::shared_ptr<Array>& array_ptr() const { return array_; }
  const std::shared_ptr<Object>& object_ptr() const { return object_; }
  Value Call(Arguments& args) const;
  const std::string& callable_name() const { return string_; }

  // Python's bool(x).
  bool Truthy() const;
  // str(x), repr(x), and Python's type name ("str", "dict", ...).
  std::string Str() const;
  std::string Repr() const;
  std::string TypeName() const;
  // transformers' tojson: json.dumps(x, ensure_ascii=False, indent=indent).
  std::string ToJson(std::optional<int> indent = std::nullopt) const;
  nlohmann::ordered_json ToJsonValue() const;

  // Python's ==, and < for numbers and strings (else TemplateError).
  bool Equals(const Value& other) const;
  bool Less(const Value& other) const;

 private:
  explicit Value(Kind kind) : kind_(kind) {}
  void WriteJson(std::string& out, std::optional<int> indent, int depth) const;

  Kind kind_ = Kind::kUndefined;
  bool tuple_ = false;
  std::int64_t int_ = 0;
  double float_ = 0;
  std::string string_;
  std::shared_ptr<Array> array_;
  std::shared_ptr<Object> object_;
  std::shared_ptr<Callable> callable_;
};

// Call arguments: positional, then keyword.
struct Arguments {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  // The argument at `index` or named `name`, else `fallback`; extra arguments are
  // refused by Check.
  Value Get(std::size_t index, const std::string& name, Value fallback = Value()) const;
  bool Has(std::size_t index, const std::string& name) const;
  // Refuses more positional arguments than `max_positional` or unknown keywords.
  void Check(const std::string& function, std::size_t max_positional,
             std::initializer_list<const char*> keywords = {}) const;
};

// Python's float repr (shortest round trip; exponent form below 1e-4 and from 1e16).
std::string PythonFloatRepr(double d);
// UTF-8 code points, for Python's indexing, slicing and len of strings.
std::vector<std::string> CodePoints(const std::string& s);

}  // namespace posttrain::chat
