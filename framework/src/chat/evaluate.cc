// Evaluation of the syntax tree (ast.h) with Jinja2's semantics, and the public
// JinjaTemplate API (posttrain/chat/jinja_template.h).
#include <cctype>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "ast.h"
#include "context.h"
#include "lexer.h"
#include "posttrain/chat/jinja_template.h"

namespace posttrain::chat {
namespace {

[[noreturn]] void ThrowUndefined(const Value& v) {
  throw TemplateError(v.string().empty() ? "value is undefined" : v.string());
}

[[noreturn]] void Unsupported(const std::string& op, const Value& a, const Value& b) {
  throw TemplateError(absl::StrCat("unsupported operand type(s) for ", op, ": '", a.TypeName(), "' and '",
                                   b.TypeName(), "'"));
}

Value Repeat(const Value& sequence, std::int64_t times) {
  const std::size_t unit = sequence.is_string() ? sequence.string().size() : sequence.array().size();
  if (times > 0 && unit > 0 && static_cast<double>(unit) * static_cast<double>(times) > 1e8) {
    throw TemplateError("repetition result too large (over 10^8 elements)");
  }
  if (sequence.is_string()) {
    std::string out;
    for (std::int64_t i = 0; i < times; ++i) out += sequence.string();
    return Value(std::move(out));
  }
  Array out;
  for (std::int64_t i = 0; i < times; ++i) out.insert(out.end(), sequence.array().begin(), sequence.array().end());
  return Value(std::move(out));
}

}  // namespace

Value FormatPercent(const std::string& format, const Value& args) {
  Array values = args.is_array() ? args.array() : Array{args};
  std::size_t next = 0;
  std::string out;
  for (std::size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out += format[i];
      continue;
    }
    // %[flags][width][.precision]type, as Python's printf-style formatting.
    std::size_t j = i + 1;
    while (j < format.size() && std::string("-+ #0").find(format[j]) != std::string::npos) ++j;
    while (j < format.size() && std::isdigit(static_cast<unsigned char>(format[j]))) ++j;
    if (j < format.size() && format[j] == '.') {
      ++j;
      while (j < format.size() && std::isdigit(static_cast<unsigned char>(format[j]))) ++j;
    }
    if (j >= format.size()) throw TemplateError("incomplete format");
    const char type = format[j];
    const std::string spec = format.substr(i, j - i);  // "%-5" etc. without the type
    i = j;
    if (type == '%') {
      out += '%';
      continue;
    }
    if (next >= values.size()) throw TemplateError("not enough arguments for format string");
    const Value& v = values[next++];
    char buf[512];
    switch (type) {
      case 's':
      case 'r': {
        const std::string text = type == 's' ? v.Str() : v.Repr();
        std::snprintf(buf, sizeof(buf), (spec + "s").c_str(), text.c_str());
        out += text.size() < 256 ? std::string(buf) : text;
        break;
      }
      case 'd':
      case 'i':
      case 'x':
      case 'X':
      case 'o':
      case 'c': {
        if (!v.is_number()) throw TemplateError(absl::StrCat("%", std::string(1, type), " format: a number is required, not ", v.TypeName()));
        if (!v.is_int() && !(std::abs(v.number()) < 9.2e18)) {
          throw TemplateError(absl::StrCat("%", std::string(1, type), " format: ", Value(v.number()).Repr(),
                                           " is out of the 64-bit integer range"));
        }
        const long long n = v.is_int() ? v.int_value() : static_cast<long long>(v.number());
        std::snprintf(buf, sizeof(buf), (spec + "ll" + (type == 'i' ? 'd' : type)).c_str(), n);
        out += buf;
        break;
      }
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G':
        if (!v.is_number()) throw TemplateError(absl::StrCat("must be real number, not ", v.TypeName()));
        std::snprintf(buf, sizeof(buf), (spec + type).c_str(), v.number());
        out += buf;
        break;
      default: throw TemplateError(absl::StrCat("unsupported format character '", std::string(1, type), "'"));
    }
  }
  if (next < values.size() && args.is_array()) throw TemplateError("not all arguments converted during string formatting");
  return Value(std::move(out));
}

namespace {

// Python's integers are unbounded, these are 64-bit: a result out of range is an
// error rather than a wrapped (or undefined) value.
std::int64_t CheckedInt(char op, std::int64_t a, std::int64_t b, const std::string& name) {
  std::int64_t r = 0;
  const bool overflowed = op == '+'   ? __builtin_add_overflow(a, b, &r)
                          : op == '-' ? __builtin_sub_overflow(a, b, &r)
                                      : __builtin_mul_overflow(a, b, &r);
  if (overflowed) throw TemplateError(absl::StrCat("integer overflow in '", name, "' (integers are 64-bit here)"));
  return r;
}

std::int64_t IntPower(std::int64_t base, std::int64_t exponent) {  // exponent >= 0, by squaring
  std::int64_t result = 1;
  while (exponent > 0) {
    if (exponent & 1) result = CheckedInt('*', result, base, "**");
    exponent >>= 1;
    if (exponent > 0) base = CheckedInt('*', base, base, "**");
  }
  return result;
}

Value Arithmetic(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) ThrowUndefined(a);
  if (b.is_undefined()) ThrowUndefined(b);
  if (op == "+") {
    if (a.is_string() && b.is_string()) return Value(a.string() + b.string());
    if (a.is_array() && b.is_array()) {
      Array out = a.array();
      out.insert(out.end(), b.array().begin(), b.array().end());
      return Value(std::move(out));
    }
  }
  if (op == "*") {
    if ((a.is_string() || a.is_array()) && b.is_int()) return Repeat(a, b.int_value());
    if (a.is_int() && (b.is_string() || b.is_array())) return Repeat(b, a.int_value());
  }
  if (op == "%" && a.is_string()) return FormatPercent(a.string(), b);
  if (!a.is_number() || !b.is_number()) Unsupported(op, a, b);
  bool ints = a.is_int() && b.is_int();
  if (op == "+") return ints ? Value(CheckedInt('+', a.int_value(), b.int_value(), op)) : Value(a.number() + b.number());
  if (op == "-") return ints ? Value(CheckedInt('-', a.int_value(), b.int_value(), op)) : Value(a.number() - b.number());
  if (op == "*") return ints ? Value(CheckedInt('*', a.int_value(), b.int_value(), op)) : Value(a.number() * b.number());
  if (op == "/") {
    if (b.number() == 0) throw TemplateError("division by zero");
    return Value(a.number() / b.number());
  }
  if (op == "//" || op == "%") {
    if (b.number() == 0) throw TemplateError(op == "//" ? "integer division or modulo by zero" : "modulo by zero");
    if (ints) {
      std::int64_t x = a.int_value(), y = b.int_value();
      if (y == -1) return op == "//" ? Value(CheckedInt('-', 0, x, op)) : Value(std::int64_t{0});
      std::int64_t q = x / y, r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) {
        --q;
        r += y;
      }
      return op == "//" ? Value(q) : Value(r);
    }
    double q = std::floor(a.number() / b.number());
    return op == "//" ? Value(q) : Value(a.number() - q * b.number());
  }
  if (op == "**") {
    if (ints && b.int_value() >= 0) return Value(IntPower(a.int_value(), b.int_value()));
    return Value(std::pow(a.number(), b.number()));
  }
  Unsupported(op, a, b);
}

bool Contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined: return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        throw TemplateError(absl::StrCat("'in <string>' requires string as left operand, not ", item.TypeName()));
      }
      return container.string().find(item.string()) != std::string::npos;
    case Value::Kind::kArray:
      for (const Value& v : container.array()) {
        if (v.Equals(item)) return true;
      }
      return false;
    case Value::Kind::kObject: return container.object().Find(item) != nullptr;
    default:
      throw TemplateError(absl::StrCat("argument of type '", container.TypeName(), "' is not iterable"));
  }
}

// Python's slice indices for a sequence of `size`.
std::vector<std::size_t> SliceIndices(std::int64_t size, const Value& start, const Value& stop, const Value& step) {
  std::int64_t s = step.is_none() || step.is_undefined() ? 1 : step.int_value();
  if (s == 0) throw TemplateError("slice step cannot be zero");
  auto clamp = [&](const Value& v, std::int64_t fallback) {
    if (v.is_none() || v.is_undefined()) return fallback;
    if (!v.is_int()) throw TemplateError("slice indices must be integers or None");
    std::int64_t i = v.int_value();
    if (i < 0) i += size;
    if (s > 0) return std::clamp<std::int64_t>(i, 0, size);
    return std::clamp<std::int64_t>(i, -1, size - 1);
  };
  std::int64_t begin = clamp(start, s > 0 ? 0 : size - 1);
  std::int64_t end = clamp(stop, s > 0 ? size : -1);
  std::vector<std::size_t> out;
  for (std::int64_t i = begin; s > 0 ? i < end : i > end;) {
    out.push_back(static_cast<std::size_t>(i));
    if (s > 0 ? (end - i) - s <= 0 : (i - end) + s <= 0) break;  // the next index is past the end (and may not fit)
    i += s;
  }
  return out;
}

Value MakeLoop(const Array& items, std::size_t i) {
  auto n = static_cast<std::int64_t>(items.size());
  auto k = static_cast<std::int64_t>(i);
  Object loop;
  loop.items = {
      {Value("index"), Value(k + 1)},
      {Value("index0"), Value(k)},
      {Value("revindex"), Value(n - k)},
      {Value("revindex0"), Value(n - k - 1)},
      {Value("first"), Value(k == 0)},
      {Value("last"), Value(k == n - 1)},
      {Value("length"), Value(n)},
      {Value("depth"), Value(1)},
      {Value("depth0"), Value(0)},
      {Value("previtem"), k > 0 ? items[i - 1] : Value::Undefined("there is no previous item")},
      {Value("nextitem"), k + 1 < n ? items[i + 1] : Value::Undefined("there is no next item")},
  };
  loop.items.emplace_back(Value("cycle"), Value::Function("loop.cycle", [k](Arguments& args) {
                            if (args.positional.empty()) throw TemplateError("no items for cycling given");
                            return args.positional[static_cast<std::size_t>(k) % args.positional.size()];
                          }));
  return Value(std::move(loop));
}

void Assign(Context& ctx, const std::vector<std::string>& targets, const Value& value) {
  if (targets.size() == 1) {
    ctx.Set(targets[0], value);
    return;
  }
  Array parts = Iterate(value);
  if (parts.size() != targets.size()) {
    throw TemplateError(absl::StrCat(parts.size() < targets.size() ? "not enough" : "too many",
                                     " values to unpack (expected ", targets.size(), ", got ", parts.size(), ")"));
  }
  for (std::size_t i = 0; i < targets.size(); ++i) ctx.Set(targets[i], parts[i]);
}

}  // namespace

Arguments CallArgs::Eval(Context& ctx) const {
  Arguments args;
  for (const ExprPtr& e : positional) args.positional.push_back(e->Eval(ctx));
  for (const auto& [name, e] : keyword) args.keyword.emplace_back(name, e->Eval(ctx));
  return args;
}

Value Literal::Eval(Context&) const { return value; }

Value NameExpr::Eval(Context& ctx) const { return ctx.Lookup(name); }

Value ListExpr::Eval(Context& ctx) const {
  Array out;
  out.reserve(items.size());
  for (const ExprPtr& e : items) out.push_back(e->Eval(ctx));
  return tuple ? Value::Tuple(std::move(out)) : Value(std::move(out));
}

namespace {

bool Compare(const std::string& op, const Value& l, const Value& r) {
  if (op == "==") return l.Equals(r);
  if (op == "!=") return !l.Equals(r);
  if (op == "<") return l.Less(r);
  if (op == ">") return r.Less(l);
  if (op == "<=") return !r.Less(l);
  if (op == ">=") return !l.Less(r);
  if (op == "in") return Contains(r, l);
  return !Contains(r, l);  // notin
}

}  // namespace

Value CompareExpr::Eval(Context& ctx) const {
  Value left = first->Eval(ctx);
  for (const auto& [op, e] : rest) {
    Value right = e->Eval(ctx);
    if (!Compare(op, left, right)) return Value(false);
    left = std::move(right);
  }
  return Value(true);
}

Value DictExpr::Eval(Context& ctx) const {
  Object out;
  for (const auto& [k, v] : items) out.Set(k->Eval(ctx), v->Eval(ctx));
  return Value(std::move(out));
}

Value GetAttr::Eval(Context& ctx) const {
  Value o = object->Eval(ctx);
  if (o.is_undefined()) ThrowUndefined(o);
  return GetAttribute(o, name);
}

Value GetItem::Eval(Context& ctx) const {
  Value o = object->Eval(ctx);
  if (o.is_undefined()) ThrowUndefined(o);
  return GetItemOf(o, key->Eval(ctx));
}

Value SliceExpr::Eval(Context& ctx) const {
  Value o = object->Eval(ctx);
  if (o.is_undefined()) ThrowUndefined(o);
  Value a = start ? start->Eval(ctx) : Value::None();
  Value b = stop ? stop->Eval(ctx) : Value::None();
  Value c = step ? step->Eval(ctx) : Value::None();
  if (o.is_string()) {
    std::vector<std::string> chars = CodePoints(o.string());
    std::string out;
    for (std::size_t i : SliceIndices(static_cast<std::int64_t>(chars.size()), a, b, c)) out += chars[i];
    return Value(std::move(out));
  }
  if (o.is_array()) {
    Array out;
    for (std::size_t i : SliceIndices(static_cast<std::int64_t>(o.array().size()), a, b, c)) out.push_back(o.array()[i]);
    return Value(std::move(out));
  }
  throw TemplateError(absl::StrCat("'", o.TypeName(), "' object is not subscriptable"));
}

Value CallExpr::Eval(Context& ctx) const {
  Value f = callee->Eval(ctx);
  Arguments a = args.Eval(ctx);
  return f.Call(a);
}

Value FilterExpr::Apply(Context& ctx, Value v) const {
  Arguments a = args.Eval(ctx);
  return ApplyFilter(name, std::move(v), a, ctx);
}

Value FilterExpr::Eval(Context& ctx) const { return Apply(ctx, operand->Eval(ctx)); }

Value TestExpr::Eval(Context& ctx) const {
  Value v = operand->Eval(ctx);
  Arguments a = args.Eval(ctx);
  return Value(ApplyTest(name, v, a, ctx) != negated);
}

Value UnaryExpr::Eval(Context& ctx) const {
  Value v = operand->Eval(ctx);
  if (op == "not") return Value(!v.Truthy());
  if (v.is_undefined()) ThrowUndefined(v);
  if (!v.is_number()) throw TemplateError(absl::StrCat("bad operand type for unary ", op, ": '", v.TypeName(), "'"));
  if (op == "+") return v.is_bool() ? Value(v.int_value()) : v;
  return v.is_int() ? Value(CheckedInt('-', 0, v.int_value(), "-")) : Value(-v.number());
}

Value BinaryExpr::Eval(Context& ctx) const {
  if (op == "and") {
    Value l = left->Eval(ctx);
    return l.Truthy() ? right->Eval(ctx) : l;
  }
  if (op == "or") {
    Value l = left->Eval(ctx);
    return l.Truthy() ? l : right->Eval(ctx);
  }
  Value l = left->Eval(ctx);
  Value r = right->Eval(ctx);
  if (op == "==") return Value(l.Equals(r));
  if (op == "!=") return Value(!l.Equals(r));
  if (op == "<") return Value(l.Less(r));
  if (op == ">") return Value(r.Less(l));
  if (op == "<=") return Value(!r.Less(l));
  if (op == ">=") return Value(!l.Less(r));
  if (op == "in") return Value(Contains(r, l));
  if (op == "notin") return Value(!Contains(r, l));
  if (op == "~") return Value(l.Str() + r.Str());
  return Arithmetic(op, l, r);
}

Value CondExpr::Eval(Context& ctx) const {
  if (condition->Eval(ctx).Truthy()) return then->Eval(ctx);
  return otherwise ? otherwise->Eval(ctx) : Value::Undefined("the inline if-expression evaluated to false and no else section was defined");
}

Flow RenderBody(const Body& body, Context& ctx, std::string& out) {
  // Rendered text past 10^8 bytes is an error (a hostile template), not an allocation.
  constexpr std::size_t kMaxOutput = 100'000'000;
  for (const StmtPtr& stmt : body) {
    Flow flow;
    try {
      flow = stmt->Render(ctx, out);
      if (out.size() > kMaxOutput) throw TemplateError("rendered text over 10^8 bytes");
    } catch (TemplateError& e) {
      if (e.line() == 0) e.set_line(stmt->line);
      throw;
    }
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Flow TextStmt::Render(Context&, std::string& out) const {
  out += text;
  return Flow::kNormal;
}

Flow OutputStmt::Render(Context& ctx, std::string& out) const {
  out += expr->Eval(ctx).Str();
  return Flow::kNormal;
}

Flow IfStmt::Render(Context& ctx, std::string& out) const {
  for (const auto& [condition, body] : branches) {
    if (condition->Eval(ctx).Truthy()) return RenderBody(body, ctx, out);
  }
  return RenderBody(otherwise, ctx, out);
}

Flow ForStmt::Render(Context& ctx, std::string& out) const {
  Value source = iterable->Eval(ctx);
  Array items = Iterate(source);
  if (filter) {
    Array kept;
    for (const Value& item : items) {
      Context::ScopeGuard scope(ctx);
      Assign(ctx, targets, item);
      if (filter->Eval(ctx).Truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  for (std::size_t i = 0; i < items.size(); ++i) {
    Context::ScopeGuard scope(ctx);
    Assign(ctx, targets, items[i]);
    ctx.Set("loop", MakeLoop(items, i));
    if (RenderBody(body, ctx, out) == Flow::kBreak) break;
  }
  if (items.empty()) {
    Context::ScopeGuard scope(ctx);
    return RenderBody(otherwise, ctx, out);
  }
  return Flow::kNormal;
}

Flow SetStmt::Render(Context& ctx, std::string& out) const {
  (void)out;
  Value v;
  if (value) {
    v = value->Eval(ctx);
  } else {
    std::string text;
    RenderBody(body, ctx, text);
    v = Value(std::move(text));
    for (const auto& f : filters) v = f->Apply(ctx, std::move(v));
  }
  if (!attribute.empty()) {
    Value target = ctx.Lookup(targets[0]);
    if (!target.is_object() || !target.object().is_namespace) {
      throw TemplateError("cannot assign attribute on non-namespace object");
    }
    target.object().Set(Value(attribute), std::move(v));
    return Flow::kNormal;
  }
  Assign(ctx, targets, v);
  return Flow::kNormal;
}

namespace {

// A macro as a callable: binds the parameters in a scope under the defining one.
Value MakeMacro(Context& ctx, std::string name, const std::vector<std::pair<std::string, ExprPtr>>& params,
                std::shared_ptr<Body> body) {
  // Weak: a macro is stored in the scope it was defined in, and a strong reference
  // back would keep both alive after rendering (LeakSanitizer found the cycle). A
  // macro lives only while its template renders, as the scope does.
  std::weak_ptr<Scope> defined_weak = ctx.scope();
  Context* context = &ctx;
  return Value::Function(name, [=, &params](Arguments& args) {
    std::shared_ptr<Scope> defined_in = defined_weak.lock();
    if (defined_in == nullptr) throw TemplateError(absl::StrCat("macro '", name, "' called outside the block that defined it"));
    constexpr int kMaxCallDepth = 100;
    struct Depth {
      explicit Depth(int& d) : d(d) {
        if (++d > kMaxCallDepth) {
          --d;
          throw TemplateError(absl::StrCat("macro calls nested more than ", kMaxCallDepth, " deep (runaway recursion?)"));
        }
      }
      ~Depth() { --d; }
      int& d;
    } depth(context->call_depth());
    Context::ScopeGuard scope(*context, defined_in);
    Array varargs;
    for (std::size_t i = 0; i < args.positional.size(); ++i) {
      if (i < params.size()) context->Set(params[i].first, args.positional[i]);
      else varargs.push_back(args.positional[i]);
    }
    Object kwargs;
    for (const auto& [k, v] : args.keyword) {
      bool is_param = false;
      for (const auto& p : params) is_param = is_param || p.first == k;
      if (is_param || k == "caller") context->Set(k, v);
      else kwargs.Set(Value(k), v);
    }
    for (std::size_t i = args.positional.size(); i < params.size(); ++i) {
      const auto& [pname, fallback] = params[i];
      bool given = false;
      for (const auto& [k, v] : args.keyword) given = given || k == pname;
      if (given) continue;
      context->Set(pname, fallback ? fallback->Eval(*context)
                                   : Value::Undefined(absl::StrCat("parameter '", pname, "' was not provided")));
    }
    context->Set("varargs", Value::Tuple(std::move(varargs)));
    context->Set("kwargs", Value(std::move(kwargs)));
    std::string text;
    RenderBody(*body, *context, text);
    return Value(std::move(text));
  });
}

}  // namespace

Flow MacroStmt::Render(Context& ctx, std::string&) const {
  ctx.Set(name, MakeMacro(ctx, name, params, body));
  return Flow::kNormal;
}

Flow CallBlockStmt::Render(Context& ctx, std::string& out) const {
  Value callee = call->callee->Eval(ctx);
  Arguments args = call->args.Eval(ctx);
  args.keyword.emplace_back("caller", MakeMacro(ctx, "caller", params, body));
  out += callee.Call(args).Str();
  return Flow::kNormal;
}

Flow FilterBlockStmt::Render(Context& ctx, std::string& out) const {
  std::string text;
  RenderBody(body, ctx, text);
  Value v(std::move(text));
  for (const auto& f : filters) v = f->Apply(ctx, std::move(v));
  out += v.Str();
  return Flow::kNormal;
}

Flow WithStmt::Render(Context& ctx, std::string& out) const {
  Context::ScopeGuard scope(ctx);
  for (const auto& [name, e] : assignments) ctx.Set(name, e->Eval(ctx));
  return RenderBody(body, ctx, out);
}

Flow LoopControlStmt::Render(Context&, std::string&) const { return flow; }

Flow GenerationStmt::Render(Context& ctx, std::string& out) const {
  std::size_t begin = out.size();
  Flow flow = RenderBody(body, ctx, out);
  if (ctx.IsRoot(&out)) ctx.generation_spans().emplace_back(begin, out.size());
  return flow;
}

}  // namespace posttrain::chat

namespace posttrain {

struct JinjaTemplate::Impl {
  std::string name;
  chat::Body body;
};

JinjaTemplate::JinjaTemplate() = default;
JinjaTemplate::~JinjaTemplate() = default;
JinjaTemplate::JinjaTemplate(JinjaTemplate&&) noexcept = default;
JinjaTemplate& JinjaTemplate::operator=(JinjaTemplate&&) noexcept = default;

absl::StatusOr<JinjaTemplate> JinjaTemplate::Parse(std::string source, std::string name) {
  auto impl = std::make_shared<Impl>();
  impl->name = std::move(name);
  try {
    impl->body = chat::Parse(chat::Tokenize(std::move(source)));
  } catch (const chat::TemplateError& e) {
    return absl::InvalidArgumentError(absl::StrCat(impl->name, ":", e.line(), ": ", e.what()));
  } catch (const std::exception& e) {  // a literal out of range (std::stoll, std::stod)
    return absl::InvalidArgumentError(absl::StrCat(impl->name, ": bad literal: ", e.what()));
  }
  JinjaTemplate t;
  t.impl_ = std::move(impl);
  return t;
}

absl::StatusOr<TemplateRendering> JinjaTemplate::Render(const nlohmann::ordered_json& variables,
                                                        std::time_t now) const {
  if (!impl_) return absl::FailedPreconditionError("render of an empty template");
  if (!variables.is_object()) return absl::InvalidArgumentError("template variables must be a JSON object");
  auto globals = std::make_shared<chat::Scope>();
  chat::AddGlobals(*globals, now);
  auto scope = std::make_shared<chat::Scope>();
  scope->parent = globals;
  for (auto it = variables.begin(); it != variables.end(); ++it) {
    scope->vars[it.key()] = chat::Value::FromJson(it.value());
  }
  TemplateRendering result;
  chat::Context ctx(scope, &result.text, now);
  try {
    chat::RenderBody(impl_->body, ctx, result.text);
  } catch (const chat::TemplateError& e) {
    if (e.raised()) return absl::AbortedError(e.what());
    return absl::InvalidArgumentError(absl::StrCat(impl_->name, ":", e.line(), ": ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(impl_->name, ": ", e.what()));
  }
  result.generation_spans = std::move(ctx.generation_spans());
  return result;
}

}  // namespace posttrain
