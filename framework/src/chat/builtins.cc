// Jinja2's builtin filters and tests, the globals transformers adds, and the Python
// methods of str and dict that chat templates call — with Python's semantics (the
// reference is Jinja2 3.1's documentation and Python 3's str/dict documentation).
// Mutating methods (list.append, dict.update, ...) are refused, as transformers'
// ImmutableSandboxedEnvironment refuses them.
#include <algorithm>
#include <cmath>
#include <ctime>
#include <set>

#include "absl/strings/str_cat.h"
#include "context.h"

namespace posttrain::chat {
namespace {

// Python's str.isspace() for the characters templates meet (ASCII and NBSP-free text).
bool IsPySpace(const std::string& cp) {
  return cp == " " || cp == "\t" || cp == "\n" || cp == "\r" || cp == "\f" || cp == "\v" || cp == "\x1c" ||
         cp == "\x1d" || cp == "\x1e" || cp == "\x1f" || cp == "\xc2\x85" || cp == "\xc2\xa0" ||
         cp == "\xe3\x80\x80" || cp == "\xe2\x80\xa8" || cp == "\xe2\x80\xa9";
}

// str.strip / lstrip / rstrip: whitespace, or the code points of `chars`.
std::string Strip(const std::string& s, const Value& chars, bool left, bool right) {
  std::vector<std::string> cps = CodePoints(s);
  std::set<std::string> set;
  bool whitespace = chars.is_none() || chars.is_undefined();
  if (!whitespace) {
    for (const std::string& c : CodePoints(chars.Str())) set.insert(c);
  }
  auto strip = [&](const std::string& c) { return whitespace ? IsPySpace(c) : set.count(c) > 0; };
  std::size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip(cps[e - 1])) --e;
  }
  std::string out;
  for (std::size_t i = b; i < e; ++i) out += cps[i];
  return out;
}

Array Split(const std::string& s, const Value& sep, std::int64_t maxsplit) {
  Array out;
  if (sep.is_none() || sep.is_undefined()) {
    std::vector<std::string> cps = CodePoints(s);
    std::size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && IsPySpace(cps[i])) ++i;
      if (i == cps.size()) break;
      if (maxsplit >= 0 && static_cast<std::int64_t>(out.size()) == maxsplit) {
        std::string rest;
        for (std::size_t j = i; j < cps.size(); ++j) rest += cps[j];
        // Python strips trailing whitespace of the remainder only when splitting on whitespace.
        out.push_back(Value(Strip(rest, Value::None(), false, true)));
        return out;
      }
      std::string word;
      while (i < cps.size() && !IsPySpace(cps[i])) word += cps[i++];
      out.push_back(Value(std::move(word)));
    }
    return out;
  }
  const std::string& d = sep.Str();
  if (d.empty()) throw TemplateError("empty separator");
  std::size_t start = 0;
  while (true) {
    if (maxsplit >= 0 && static_cast<std::int64_t>(out.size()) == maxsplit) break;
    std::size_t at = s.find(d, start);
    if (at == std::string::npos) break;
    out.push_back(Value(s.substr(start, at - start)));
    start = at + d.size();
  }
  out.push_back(Value(s.substr(start)));
  return out;
}

Array RSplit(const std::string& s, const std::string& d, std::int64_t maxsplit) {
  if (d.empty()) throw TemplateError("empty separator");
  Array out;
  std::size_t end = s.size();
  while (maxsplit < 0 || static_cast<std::int64_t>(out.size()) < maxsplit) {
    if (end < d.size()) break;
    std::size_t at = s.rfind(d, end - d.size());
    if (at == std::string::npos) break;
    out.insert(out.begin(), Value(s.substr(at + d.size(), end - at - d.size())));
    end = at;
  }
  out.insert(out.begin(), Value(s.substr(0, end)));
  return out;
}

std::string Replace(const std::string& s, const std::string& from, const std::string& to, std::int64_t count) {
  std::string out;
  if (from.empty()) {
    // Python inserts `to` between code points (and at both ends).
    std::vector<std::string> cps = CodePoints(s);
    std::int64_t n = 0;
    for (const std::string& c : cps) {
      if (count < 0 || n++ < count) out += to;
      out += c;
    }
    if (count < 0 || n < count) out += to;
    return out;
  }
  std::size_t pos = 0;
  std::int64_t n = 0;
  while (count < 0 || n < count) {
    std::size_t at = s.find(from, pos);
    if (at == std::string::npos) break;
    out.append(s, pos, at - pos);
    out += to;
    pos = at + from.size();
    ++n;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

std::string AsciiMap(std::string s, int (*f)(int)) {
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x80) c = static_cast<char>(f(static_cast<unsigned char>(c)));
  }
  return s;
}

std::string Title(const std::string& s) {
  std::string out = s;
  bool previous_cased = false;
  for (char& c : out) {
    auto u = static_cast<unsigned char>(c);
    bool alpha = u < 0x80 && std::isalpha(u);
    if (alpha) c = static_cast<char>(previous_cased ? std::tolower(u) : std::toupper(u));
    previous_cased = alpha || u >= 0x80;
  }
  return out;
}

std::string Capitalize(const std::string& s) {
  std::string out = AsciiMap(s, [](int c) { return std::tolower(c); });
  if (!out.empty() && static_cast<unsigned char>(out[0]) < 0x80) out[0] = static_cast<char>(std::toupper(out[0]));
  return out;
}

bool StartsOrEnds(const std::string& s, const Value& affix, bool start) {
  auto one = [&](const std::string& a) {
    if (a.size() > s.size()) return false;
    return start ? s.compare(0, a.size(), a) == 0 : s.compare(s.size() - a.size(), a.size(), a) == 0;
  };
  if (affix.is_array()) {
    for (const Value& v : affix.array()) {
      if (one(v.Str())) return true;
    }
    return false;
  }
  if (!affix.is_string()) throw TemplateError("startswith/endswith first arg must be str or a tuple of str");
  return one(affix.string());
}

// A width or count a template asks for: past 10^8 it is an error, not an allocation.
std::int64_t Bounded(std::int64_t n, const char* what) {
  if (n > 100'000'000) throw TemplateError(absl::StrCat(what, " ", n, " is too large (over 10^8)"));
  return n;
}

std::int64_t IntArg(const Arguments& args, std::size_t index, const std::string& name, std::int64_t fallback) {
  Value v = args.Get(index, name);
  if (v.is_undefined() || v.is_none()) return fallback;
  if (!v.is_int()) throw TemplateError(absl::StrCat("'", name, "' must be an integer"));
  return v.int_value();
}

Value Bound(const std::string& name, Callable fn) { return Value::Function(name, std::move(fn)); }

Value StringMethod(const Value& self, const std::string& name) {
  const std::string s = self.string();
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    bool left = name != "rstrip", right = name != "lstrip";
    return Bound(name, [s, left, right, name](Arguments& a) {
      a.Check(name, 1);
      return Value(Strip(s, a.Get(0, "chars", Value::None()), left, right));
    });
  }
  if (name == "split") {
    return Bound(name, [s](Arguments& a) {
      a.Check("split", 2, {"sep", "maxsplit"});
      return Value(Split(s, a.Get(0, "sep", Value::None()), IntArg(a, 1, "maxsplit", -1)));
    });
  }
  if (name == "rsplit") {
    return Bound(name, [s](Arguments& a) {
      a.Check("rsplit", 2, {"sep", "maxsplit"});
      Value sep = a.Get(0, "sep", Value::None());
      std::int64_t maxsplit = IntArg(a, 1, "maxsplit", -1);
      if (sep.is_none()) {
        if (maxsplit >= 0) throw TemplateError("rsplit() on whitespace with maxsplit is not supported");
        return Value(Split(s, sep, -1));
      }
      return Value(RSplit(s, sep.Str(), maxsplit));
    });
  }
  if (name == "splitlines") {
    return Bound(name, [s](Arguments& a) {
      a.Check("splitlines", 1, {"keepends"});
      bool keep = a.Get(0, "keepends", Value(false)).Truthy();
      Array out;
      std::size_t start = 0;
      for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\n' && s[i] != '\r') continue;
        std::size_t end = i;
        if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
        out.push_back(Value(s.substr(start, (keep ? i + 1 : end) - start)));
        start = i + 1;
      }
      if (start < s.size()) out.push_back(Value(s.substr(start)));
      return Value(std::move(out));
    });
  }
  if (name == "startswith" || name == "endswith") {
    bool start = name == "startswith";
    return Bound(name, [s, start, name](Arguments& a) {
      a.Check(name, 1);
      return Value(StartsOrEnds(s, a.Get(0, "prefix"), start));
    });
  }
  if (name == "replace") {
    return Bound(name, [s](Arguments& a) {
      a.Check("replace", 3, {"count"});
      return Value(Replace(s, a.Get(0, "old").Str(), a.Get(1, "new").Str(), IntArg(a, 2, "count", -1)));
    });
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize" || name == "swapcase") {
    return Bound(name, [s, name](Arguments& a) {
      a.Check(name, 0);
      if (name == "upper") return Value(AsciiMap(s, [](int c) { return std::toupper(c); }));
      if (name == "lower") return Value(AsciiMap(s, [](int c) { return std::tolower(c); }));
      if (name == "title") return Value(Title(s));
      if (name == "capitalize") return Value(Capitalize(s));
      return Value(AsciiMap(s, [](int c) { return std::isupper(c) ? std::tolower(c) : std::toupper(c); }));
    });
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    return Bound(name, [s, name](Arguments& a) {
      a.Check(name, 1);
      std::string sub = a.Get(0, "sub").Str();
      if (name == "count") {
        if (sub.empty()) return Value(static_cast<std::int64_t>(CodePoints(s).size() + 1));
        std::int64_t n = 0;
        for (std::size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
        return Value(n);
      }
      std::size_t at = (name == "find" || name == "index") ? s.find(sub) : s.rfind(sub);
      if (at == std::string::npos) {
        if (name == "index" || name == "rindex") throw TemplateError("substring not found");
        return Value(static_cast<std::int64_t>(-1));
      }
      return Value(static_cast<std::int64_t>(CodePoints(s.substr(0, at)).size()));
    });
  }
  if (name == "join") {
    return Bound(name, [s](Arguments& a) {
      a.Check("join", 1);
      std::string out;
      bool first = true;
      for (const Value& v : Iterate(a.Get(0, "iterable"))) {
        if (!v.is_string()) throw TemplateError(absl::StrCat("sequence item: expected str instance, ", v.TypeName(), " found"));
        if (!first) out += s;
        first = false;
        out += v.string();
      }
      return Value(std::move(out));
    });
  }
  if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" || name == "isupper" ||
      name == "islower") {
    return Bound(name, [s, name](Arguments& a) {
      a.Check(name, 0);
      if (s.empty()) return Value(false);
      if (name == "isspace") {
        for (const std::string& c : CodePoints(s)) {
          if (!IsPySpace(c)) return Value(false);
        }
        return Value(true);
      }
      bool any_cased = false;
      for (unsigned char c : s) {
        if (name == "isdigit" && !std::isdigit(c)) return Value(false);
        if (name == "isalpha" && !(std::isalpha(c) || c >= 0x80)) return Value(false);
        if (name == "isalnum" && !(std::isalnum(c) || c >= 0x80)) return Value(false);
        if (name == "isupper" && std::islower(c)) return Value(false);
        if (name == "islower" && std::isupper(c)) return Value(false);
        any_cased = any_cased || std::isalpha(c);
      }
      return Value(name == "isupper" || name == "islower" ? any_cased : true);
    });
  }
  if (name == "format") {
    return Bound(name, [s](Arguments& a) {
      // str.format with {} and {0}/{name} fields (no format specs).
      std::string out;
      std::size_t next = 0;
      for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '{' && i + 1 < s.size() && s[i + 1] == '{') { out += '{'; ++i; continue; }
        if (s[i] == '}' && i + 1 < s.size() && s[i + 1] == '}') { out += '}'; ++i; continue; }
        if (s[i] != '{') { out += s[i]; continue; }
        std::size_t close = s.find('}', i);
        if (close == std::string::npos) throw TemplateError("Single '{' encountered in format string");
        std::string field = s.substr(i + 1, close - i - 1);
        Value v;
        if (field.empty()) v = a.Get(next++, "");
        else if (std::all_of(field.begin(), field.end(), ::isdigit)) v = a.Get(std::stoul(field), "");
        else v = a.Get(static_cast<std::size_t>(-1), field);
        if (v.is_undefined()) throw TemplateError(absl::StrCat("format field '", field, "' has no argument"));
        out += v.Str();
        i = close;
      }
      return Value(std::move(out));
    });
  }
  return Value::Undefined(absl::StrCat("'str object' has no attribute '", name, "'"));
}

Value ObjectMethod(const Value& self, const std::string& name) {
  std::shared_ptr<Object> o = self.object_ptr();
  if (name == "items" || name == "keys" || name == "values") {
    return Bound(name, [o, name](Arguments& a) {
      a.Check(name, 0);
      Array out;
      for (const auto& [k, v] : o->items) {
        if (name == "items") out.push_back(Value::Tuple(Array{k, v}));
        else out.push_back(name == "keys" ? k : v);
      }
      return Value(std::move(out));
    });
  }
  if (name == "get") {
    return Bound(name, [o](Arguments& a) {
      a.Check("get", 2);
      const Value* v = o->Find(a.Get(0, "key"));
      return v ? *v : a.Get(1, "default", Value::None());
    });
  }
  return Value();
}

const std::set<std::string>& MutatingMethods() {
  static const std::set<std::string> k = {"append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse",
                                          "update", "setdefault", "popitem", "__setitem__", "__delitem__"};
  return k;
}

Value CheckedAttribute(const Value& object, const std::string& name) {
  if ((object.is_array() || (object.is_object() && !object.object().is_namespace)) && MutatingMethods().count(name)) {
    throw TemplateError(absl::StrCat("access to attribute '", name, "' of '", object.TypeName(),
                                     "' object is unsafe."));
  }
  return Value();
}

std::string ObjectDescription(const Value& v) {
  if (v.is_object()) return v.object().is_namespace ? "Namespace object" : "dict object";
  if (v.is_array()) return "list object";
  if (v.is_string()) return "str object";
  if (v.is_none()) return "None";
  return absl::StrCat(v.TypeName(), " object");
}

}  // namespace

Array Iterate(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined: return {};
    case Value::Kind::kArray: return value.array();
    case Value::Kind::kObject: {
      Array keys;
      for (const auto& [k, v] : value.object().items) keys.push_back(k);
      return keys;
    }
    case Value::Kind::kString: {
      Array out;
      for (std::string& c : CodePoints(value.string())) out.push_back(Value(std::move(c)));
      return out;
    }
    default: throw TemplateError(absl::StrCat("'", value.TypeName(), "' object is not iterable"));
  }
}

Value GetAttribute(const Value& object, const std::string& name) {
  CheckedAttribute(object, name);
  if (object.is_string()) {
    Value m = StringMethod(object, name);
    if (!m.is_undefined()) return m;
  }
  if (object.is_object()) {
    if (!object.object().is_namespace) {
      Value m = ObjectMethod(object, name);
      if (!m.is_undefined()) return m;
    }
    if (const Value* v = object.object().Find(Value(name))) return *v;
  }
  return Value::Undefined(absl::StrCat("'", ObjectDescription(object), "' has no attribute '", name, "'"));
}

Value GetItemOf(const Value& object, const Value& key) {
  if (object.is_array() && key.is_int()) {
    auto n = static_cast<std::int64_t>(object.array().size());
    std::int64_t i = key.int_value() < 0 ? key.int_value() + n : key.int_value();
    if (i >= 0 && i < n) return object.array()[static_cast<std::size_t>(i)];
  } else if (object.is_string() && key.is_int()) {
    std::vector<std::string> cps = CodePoints(object.string());
    auto n = static_cast<std::int64_t>(cps.size());
    std::int64_t i = key.int_value() < 0 ? key.int_value() + n : key.int_value();
    if (i >= 0 && i < n) return Value(cps[static_cast<std::size_t>(i)]);
  } else if (object.is_object()) {
    if (const Value* v = object.object().Find(key)) return *v;
  }
  if (key.is_string()) {
    Value v = GetAttribute(object, key.string());
    if (!v.is_undefined()) return v;
  }
  return Value::Undefined(absl::StrCat("'", ObjectDescription(object), "' has no attribute ", key.Repr()));
}

namespace {

Value Attr(const Value& v, const Value& attribute) {
  // "a.b" or an integer: Jinja2's environment.getitem over dotted paths.
  if (attribute.is_int()) return GetItemOf(v, attribute);
  Value cur = v;
  for (const Value& part : Split(attribute.Str(), Value("."), -1)) {
    const std::string& p = part.string();
    bool digits = !p.empty() && std::all_of(p.begin(), p.end(), ::isdigit);
    cur = GetItemOf(cur, digits ? Value(static_cast<std::int64_t>(std::stoll(p))) : part);
  }
  return cur;
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

Array SortedCopy(Array items, bool reverse, bool case_sensitive, const Value& attribute) {
  auto key = [&](const Value& v) {
    Value k = attribute.is_undefined() || attribute.is_none() ? v : Attr(v, attribute);
    if (!case_sensitive && k.is_string()) return Value(AsciiMap(k.string(), [](int c) { return std::tolower(c); }));
    return k;
  };
  std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
    return reverse ? key(b).Less(key(a)) : key(a).Less(key(b));
  });
  return items;
}

// select/reject/selectattr/rejectattr: keep items whose test (default: truthiness) is `keep`.
Array SelectItems(const Array& items, Arguments& args, bool by_attribute, bool keep, Context& ctx) {
  std::size_t first = 0;
  Value attribute;
  if (by_attribute) attribute = args.positional.empty() ? Value() : args.positional[first++];
  Array out;
  for (const Value& item : items) {
    Value v = by_attribute ? Attr(item, attribute) : item;
    bool result;
    if (args.positional.size() > first) {
      Arguments test_args;
      test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(first) + 1, args.positional.end());
      result = ApplyTest(args.positional[first].Str(), v, test_args, ctx);
    } else {
      result = v.Truthy();
    }
    if (result == keep) out.push_back(item);
  }
  return out;
}

double ToFloat(const Value& v, double fallback) {
  if (v.is_number()) return v.number();
  if (v.is_string()) {
    try {
      std::size_t used = 0;
      std::string s = Strip(v.string(), Value::None(), true, true);
      double d = std::stod(s, &used);
      return used == s.size() ? d : fallback;
    } catch (...) {
      return fallback;
    }
  }
  return fallback;
}

}  // namespace

Value ApplyFilter(const std::string& name, Value v, Arguments& args, Context& ctx) {
  auto need_defined = [&] {
    if (v.is_undefined()) throw TemplateError(v.string().empty() ? "value is undefined" : v.string());
  };
  if (name == "default" || name == "d") {
    args.Check(name, 2, {"default_value", "boolean"});
    bool boolean = args.Get(1, "boolean", Value(false)).Truthy();
    if (v.is_undefined() || (boolean && !v.Truthy())) return args.Get(0, "default_value", Value(""));
    return v;
  }
  if (name == "length" || name == "count") {
    if (v.is_string()) return Value(static_cast<std::int64_t>(CodePoints(v.string()).size()));
    if (v.is_array()) return Value(static_cast<std::int64_t>(v.array().size()));
    if (v.is_object()) return Value(static_cast<std::int64_t>(v.object().items.size()));
    if (v.is_undefined()) return Value(static_cast<std::int64_t>(0));
    throw TemplateError(absl::StrCat("object of type '", v.TypeName(), "' has no len()"));
  }
  if (name == "tojson") {
    args.Check(name, 1, {"indent", "ensure_ascii", "separators", "sort_keys"});
    Value indent = args.Get(0, "indent", Value::None());
    if (!indent.is_none() && !indent.is_int()) throw TemplateError("tojson: indent must be an integer");
    return Value(v.ToJson(indent.is_none() ? std::nullopt : std::optional<int>(static_cast<int>(Bounded(indent.int_value(), "tojson indent")))));
  }
  if (name == "trim") {
    args.Check(name, 1, {"chars"});
    return Value(Strip(v.Str(), args.Get(0, "chars", Value::None()), true, true));
  }
  if (name == "upper") return Value(AsciiMap(v.Str(), [](int c) { return std::toupper(c); }));
  if (name == "lower") return Value(AsciiMap(v.Str(), [](int c) { return std::tolower(c); }));
  if (name == "capitalize") return Value(Capitalize(v.Str()));
  if (name == "title") return Value(Title(v.Str()));
  if (name == "string") return v.is_string() ? v : Value(v.Str());
  if (name == "safe") return v;
  if (name == "list") return Value(Iterate(v));
  if (name == "escape" || name == "e" || name == "forceescape") return Value(HtmlEscape(v.Str()));
  if (name == "items") {
    if (v.is_undefined()) return Value(Array{});
    if (!v.is_object()) throw TemplateError(absl::StrCat("can only get item pairs from a mapping, not ", v.TypeName()));
    Array out;
    for (const auto& [k, x] : v.object().items) out.push_back(Value::Tuple(Array{k, x}));
    return Value(std::move(out));
  }
  if (name == "join") {
    args.Check(name, 2, {"d", "attribute"});
    std::string sep = args.Get(0, "d", Value("")).Str();
    Value attribute = args.Get(1, "attribute", Value::None());
    std::string out;
    bool first = true;
    for (const Value& item : Iterate(v)) {
      if (!first) out += sep;
      first = false;
      out += (attribute.is_none() ? item : Attr(item, attribute)).Str();
    }
    return Value(std::move(out));
  }
  if (name == "first" || name == "last") {
    Array items = Iterate(v);
    if (items.empty()) return Value::Undefined(absl::StrCat("No ", name, " item, sequence was empty."));
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::vector<std::string> cps = CodePoints(v.string());
      std::string out;
      for (auto it = cps.rbegin(); it != cps.rend(); ++it) out += *it;
      return Value(std::move(out));
    }
    Array items = Iterate(v);
    std::reverse(items.begin(), items.end());
    return Value(std::move(items));
  }
  if (name == "replace") {
    args.Check(name, 3, {"old", "new", "count"});
    return Value(Replace(v.Str(), args.Get(0, "old").Str(), args.Get(1, "new").Str(), IntArg(args, 2, "count", -1)));
  }
  if (name == "int") {
    args.Check(name, 2, {"default", "base"});
    Value fallback = args.Get(0, "default", Value(static_cast<std::int64_t>(0)));
    if (v.is_int()) return Value(v.int_value());
    if (v.is_float()) return Value(static_cast<std::int64_t>(v.number()));
    if (v.is_string()) {
      try {
        std::string s = Strip(v.string(), Value::None(), true, true);
        std::size_t used = 0;
        long long i = std::stoll(s, &used, static_cast<int>(IntArg(args, 1, "base", 10)));
        if (used == s.size()) return Value(static_cast<std::int64_t>(i));
        double d = ToFloat(v, NAN);
        if (!std::isnan(d)) return Value(static_cast<std::int64_t>(d));
      } catch (...) {
      }
    }
    return fallback;
  }
  if (name == "float") {
    args.Check(name, 1, {"default"});
    double d = ToFloat(v, NAN);
    if (std::isnan(d) && !(v.is_string() && v.string().find("nan") != std::string::npos)) {
      return args.Get(0, "default", Value(0.0));
    }
    return Value(d);
  }
  if (name == "abs") {
    need_defined();
    if (v.is_int()) return Value(std::abs(v.int_value()));
    if (v.is_float()) return Value(std::fabs(v.number()));
    throw TemplateError(absl::StrCat("bad operand type for abs(): '", v.TypeName(), "'"));
  }
  if (name == "round") {
    args.Check(name, 2, {"precision", "method"});
    std::int64_t precision = IntArg(args, 0, "precision", 0);
    std::string method = args.Get(1, "method", Value("common")).Str();
    double scale = std::pow(10.0, static_cast<double>(precision));
    double x = v.number() * scale;
    // "common" is Python's round(): halves to even.
    double r = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::nearbyint(x);
    return Value(r / scale);
  }
  if (name == "sum") {
    args.Check(name, 2, {"attribute", "start"});
    Value attribute = args.Get(0, "attribute", Value::None());
    Value total = args.Get(1, "start", Value(static_cast<std::int64_t>(0)));
    for (const Value& item : Iterate(v)) {
      Value x = attribute.is_none() ? item : Attr(item, attribute);
      if (!x.is_number() || !total.is_number()) throw TemplateError("sum: items must be numbers");
      total = total.is_int() && x.is_int() ? Value(total.int_value() + x.int_value()) : Value(total.number() + x.number());
    }
    return total;
  }
  if (name == "min" || name == "max") {
    args.Check(name, 2, {"case_sensitive", "attribute"});
    Array items = SortedCopy(Iterate(v), false, args.Get(0, "case_sensitive", Value(false)).Truthy(),
                             args.Get(1, "attribute", Value::None()));
    if (items.empty()) return Value::Undefined(absl::StrCat("No aggregated item, sequence was empty."));
    return name == "min" ? items.front() : items.back();
  }
  if (name == "sort") {
    args.Check(name, 3, {"reverse", "case_sensitive", "attribute"});
    return Value(SortedCopy(Iterate(v), args.Get(0, "reverse", Value(false)).Truthy(),
                            args.Get(1, "case_sensitive", Value(false)).Truthy(), args.Get(2, "attribute", Value::None())));
  }
  if (name == "dictsort") {
    args.Check(name, 3, {"case_sensitive", "by", "reverse"});
    if (!v.is_object()) throw TemplateError("dictsort: expected a mapping");
    bool by_value = args.Get(1, "by", Value("key")).Str() == "value";
    Array pairs;
    for (const auto& [k, x] : v.object().items) pairs.push_back(Value::Tuple(Array{k, x}));
    return Value(SortedCopy(std::move(pairs), args.Get(2, "reverse", Value(false)).Truthy(),
                            args.Get(0, "case_sensitive", Value(false)).Truthy(),
                            Value(static_cast<std::int64_t>(by_value ? 1 : 0))));
  }
  if (name == "unique") {
    Array out;
    for (const Value& item : Iterate(v)) {
      bool seen = false;
      for (const Value& o : out) seen = seen || o.Equals(item);
      if (!seen) out.push_back(item);
    }
    return Value(std::move(out));
  }
  if (name == "map") {
    Array out;
    Value attribute = args.Get(static_cast<std::size_t>(-1), "attribute");
    if (!attribute.is_undefined()) {
      Value fallback = args.Get(static_cast<std::size_t>(-1), "default");
      for (const Value& item : Iterate(v)) {
        Value x = Attr(item, attribute);
        out.push_back(x.is_undefined() && !fallback.is_undefined() ? fallback : x);
      }
      return Value(std::move(out));
    }
    if (args.positional.empty()) throw TemplateError("map requires a filter name or attribute=");
    std::string filter = args.positional[0].Str();
    Arguments rest;
    rest.positional.assign(args.positional.begin() + 1, args.positional.end());
    rest.keyword = args.keyword;
    for (const Value& item : Iterate(v)) {
      Arguments copy = rest;
      out.push_back(ApplyFilter(filter, item, copy, ctx));
    }
    return Value(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    bool by_attribute = name.size() > 6 && name.substr(name.size() - 4) == "attr";
    return Value(SelectItems(Iterate(v), args, by_attribute, name[0] == 's', ctx));
  }
  if (name == "attr") {
    args.Check(name, 1);
    return GetAttribute(v, args.Get(0, "name").Str());
  }
  if (name == "batch") {
    args.Check(name, 2, {"linecount", "fill_with"});
    std::int64_t n = IntArg(args, 0, "linecount", 1);
    if (n <= 0) throw TemplateError("batch size must be positive");
    Value fill = args.Get(1, "fill_with", Value::None());
    if (!fill.is_none()) Bounded(n, "batch size");
    Array out, cur;
    for (const Value& item : Iterate(v)) {
      cur.push_back(item);
      if (static_cast<std::int64_t>(cur.size()) == n) {
        out.push_back(Value(std::move(cur)));
        cur.clear();
      }
    }
    if (!cur.empty()) {
      if (!fill.is_none()) while (static_cast<std::int64_t>(cur.size()) < n) cur.push_back(fill);
      out.push_back(Value(std::move(cur)));
    }
    return Value(std::move(out));
  }
  if (name == "indent") {
    args.Check(name, 3, {"width", "first", "blank"});
    Value width = args.Get(0, "width", Value(static_cast<std::int64_t>(4)));
    if (!width.is_string() && !width.is_int()) throw TemplateError("indent: width must be an integer or a string");
    std::string pad = width.is_string() ? width.string()
                                        : std::string(static_cast<std::size_t>(std::max<std::int64_t>(0, Bounded(width.int_value(), "indent width"))), ' ');
    bool first = args.Get(1, "first", Value(false)).Truthy();
    bool blank = args.Get(2, "blank", Value(false)).Truthy();
    std::string s = v.Str();
    std::string out;
    std::size_t start = 0;
    bool is_first = true;
    while (start <= s.size()) {
      std::size_t nl = s.find('\n', start);
      std::string line = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      bool indent_it = (is_first ? first : true) && (blank || !Strip(line, Value::None(), true, true).empty());
      if (indent_it) out += pad;
      out += line;
      if (nl == std::string::npos) break;
      out += '\n';
      start = nl + 1;
      is_first = false;
    }
    return Value(std::move(out));
  }
  if (name == "center") {
    std::int64_t width = Bounded(IntArg(args, 0, "width", 80), "center width");
    std::string s = v.Str();
    auto n = static_cast<std::int64_t>(CodePoints(s).size());
    if (n >= width) return Value(s);
    std::int64_t total = width - n, left = total / 2 + (total & width & 1);
    return Value(std::string(static_cast<std::size_t>(left), ' ') + s +
                 std::string(static_cast<std::size_t>(total - left), ' '));
  }
  if (name == "wordcount") return Value(static_cast<std::int64_t>(Split(v.Str(), Value::None(), -1).size()));
  if (name == "truncate") {
    args.Check(name, 4, {"length", "killwords", "end", "leeway"});
    std::int64_t length = IntArg(args, 0, "length", 255);
    bool killwords = args.Get(1, "killwords", Value(false)).Truthy();
    std::string end = args.Get(2, "end", Value("...")).Str();
    std::int64_t leeway = IntArg(args, 3, "leeway", 5);
    std::vector<std::string> cps = CodePoints(v.Str());
    auto n = static_cast<std::int64_t>(cps.size());
    if (n <= length + leeway) return Value(v.Str());
    std::int64_t keep = std::max<std::int64_t>(0, length - static_cast<std::int64_t>(CodePoints(end).size()));
    std::string head;
    for (std::int64_t i = 0; i < keep; ++i) head += cps[static_cast<std::size_t>(i)];
    if (!killwords) {
      std::size_t space = head.rfind(' ');
      if (space != std::string::npos) head = head.substr(0, space);
    }
    return Value(head + end);
  }
  if (name == "format") {
    Value tuple(args.positional);
    return FormatPercent(v.Str(), tuple);
  }
  throw TemplateError(absl::StrCat("No filter named '", name, "'."));
}

bool ApplyTest(const std::string& name, const Value& v, Arguments& args, Context& ctx) {
  (void)ctx;
  Value arg = args.Get(0, "other");
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.int_value() != 0;
  if (name == "false") return v.is_bool() && v.int_value() == 0;
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.kind() == Value::Kind::kInt;
  if (name == "float") return v.is_float();
  if (name == "mapping") return v.is_object() && !v.object().is_namespace;
  if (name == "sequence") return v.is_string() || v.is_array() || v.is_object();
  if (name == "iterable") return v.is_string() || v.is_array() || v.is_object();
  if (name == "callable") return v.is_callable();
  if (name == "odd" || name == "even") {
    if (!v.is_int()) throw TemplateError(absl::StrCat("test '", name, "' needs an integer"));
    return (v.int_value() % 2 != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    if (!v.is_int() || !arg.is_int() || arg.int_value() == 0) throw TemplateError("divisibleby needs non-zero integers");
    return v.int_value() % arg.int_value() == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==") return v.Equals(arg);
  if (name == "ne" || name == "!=") return !v.Equals(arg);
  if (name == "lt" || name == "lessthan" || name == "<") return v.Less(arg);
  if (name == "le" || name == "<=") return !arg.Less(v);
  if (name == "gt" || name == "greaterthan" || name == ">") return arg.Less(v);
  if (name == "ge" || name == ">=") return !v.Less(arg);
  if (name == "in") {
    Array items = Iterate(arg);
    return std::any_of(items.begin(), items.end(), [&](const Value& x) { return x.Equals(v); });
  }
  if (name == "sameas") {
    if (v.kind() != arg.kind()) return false;
    if (v.is_array()) return v.array_ptr() == arg.array_ptr();
    if (v.is_object()) return v.object_ptr() == arg.object_ptr();
    return v.Equals(arg);
  }
  if (name == "lower") return v.Str() == AsciiMap(v.Str(), [](int c) { return std::tolower(c); });
  if (name == "upper") return v.Str() == AsciiMap(v.Str(), [](int c) { return std::toupper(c); });
  if (name == "escaped") return false;
  throw TemplateError(absl::StrCat("No test named '", name, "'."));
}

void AddGlobals(Scope& globals, std::time_t now) {
  globals.vars["range"] = Value::Function("range", [](Arguments& a) {
    a.Check("range", 3);
    if (a.positional.empty()) throw TemplateError("range expected at least 1 argument, got 0");
    for (const Value& v : a.positional) {
      if (!v.is_int()) throw TemplateError(absl::StrCat("'", v.TypeName(), "' object cannot be interpreted as an integer"));
    }
    std::int64_t start = 0, stop, step = 1;
    if (a.positional.size() == 1) {
      stop = a.positional[0].int_value();
    } else {
      start = a.positional[0].int_value();
      stop = a.positional[1].int_value();
      if (a.positional.size() == 3) step = a.positional[2].int_value();
    }
    if (step == 0) throw TemplateError("range() arg 3 must not be zero");
    Array out;
    for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (out.size() >= 100000) throw TemplateError("range too big (the sandbox allows 100000 items)");
      out.push_back(Value(i));
    }
    return Value(std::move(out));
  });
  globals.vars["dict"] = Value::Function("dict", [](Arguments& a) {
    Object o;
    if (!a.positional.empty()) {
      for (const Value& pair : Iterate(a.positional[0])) {
        Array kv = Iterate(pair);
        if (kv.size() != 2) throw TemplateError("dict() sequence elements must have length 2");
        o.Set(kv[0], kv[1]);
      }
    }
    for (const auto& [k, v] : a.keyword) o.Set(Value(k), v);
    return Value(std::move(o));
  });
  globals.vars["namespace"] = Value::Function("namespace", [](Arguments& a) {
    Object o;
    o.is_namespace = true;
    if (!a.positional.empty()) {
      if (!a.positional[0].is_object()) throw TemplateError("namespace() takes a mapping");
      for (const auto& [k, v] : a.positional[0].object().items) o.Set(k, v);
    }
    for (const auto& [k, v] : a.keyword) o.Set(Value(k), v);
    return Value(std::move(o));
  });
  globals.vars["raise_exception"] = Value::Function("raise_exception", [](Arguments& a) -> Value {
    throw TemplateError(a.Get(0, "message", Value("")).Str(), 0, /*raised=*/true);
  });
  globals.vars["strftime_now"] = Value::Function("strftime_now", [now](Arguments& a) {
    a.Check("strftime_now", 1);
    std::string format = a.Get(0, "format", Value("")).Str();
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[512];
    std::size_t n = std::strftime(buf, sizeof(buf), format.c_str(), &tm);
    return Value(std::string(buf, n));
  });
  globals.vars["cycler"] = Value::Function("cycler", [](Arguments& a) {
    auto items = std::make_shared<Array>(a.positional);
    auto index = std::make_shared<std::size_t>(0);
    Object o;
    o.is_namespace = true;
    o.Set(Value("next"), Value::Function("next", [items, index](Arguments&) {
            if (items->empty()) return Value::None();
            Value v = (*items)[*index % items->size()];
            ++*index;
            return v;
          }));
    return Value(std::move(o));
  });
  globals.vars["joiner"] = Value::Function("joiner", [](Arguments& a) {
    std::string sep = a.Get(0, "sep", Value(", ")).Str();
    auto used = std::make_shared<bool>(false);
    return Value::Function("joiner", [sep, used](Arguments&) {
      if (!*used) {
        *used = true;
        return Value("");
      }
      return Value(sep);
    });
  });
}

}  // namespace posttrain::chat
