// The interpreter's state while rendering: nested variable scopes, the globals, the
// root output (for {% generation %} spans) and the render options.
#pragma once

#include <ctime>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "value.h"

namespace posttrain::chat {

struct Scope {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;
};

class Context {
 public:
  Context(std::shared_ptr<Scope> globals, std::string* root, std::time_t now)
      : scope_(std::move(globals)), root_(root), now_(now) {}

  // The variable, or an undefined naming it.
  Value Lookup(const std::string& name) const {
    for (const Scope* s = scope_.get(); s != nullptr; s = s->parent.get()) {
      auto it = s->vars.find(name);
      if (it != s->vars.end()) return it->second;
    }
    return Value::Undefined("'" + name + "' is undefined");
  }
  void Set(const std::string& name, Value value) { scope_->vars[name] = std::move(value); }

  // Enters a child scope of `parent` (default: the current one) until destroyed.
  class ScopeGuard {
   public:
    ScopeGuard(Context& ctx, std::shared_ptr<Scope> parent = nullptr) : ctx_(ctx), saved_(ctx.scope_) {
      auto scope = std::make_shared<Scope>();
      scope->parent = parent ? std::move(parent) : ctx.scope_;
      ctx_.scope_ = std::move(scope);
    }
    ~ScopeGuard() { ctx_.scope_ = saved_; }
    ScopeGuard(const ScopeGuard&) = delete;
    ScopeGuard& operator=(const ScopeGuard&) = delete;

   private:
    Context& ctx_;
    std::shared_ptr<Scope> saved_;
  };

  const std::shared_ptr<Scope>& scope() const { return scope_; }
  bool IsRoot(const std::string* out) const { return out == root_; }
  std::vector<std::pair<std::size_t, std::size_t>>& generation_spans() { return spans_; }
  std::time_t now() const { return now_; }
  // Macro calls in progress (a recursive macro is refused past a limit rather than
  // overflowing the stack).
  int& call_depth() { return call_depth_; }

 private:

  std::shared_ptr<Scope> scope_;
  std::string* root_;
  std::time_t now_;
  std::vector<std::pair<std::size_t, std::size_t>> spans_;
  int call_depth_ = 0;
};

// builtins.cc: Jinja2's filters, tests, globals and the Python methods of str, list
// and dict that templates call. Each throws TemplateError on bad arguments.
Value ApplyFilter(const std::string& name, Value operand, Arguments& args, Context& ctx);
bool ApplyTest(const std::string& name, const Value& operand, Arguments& args, Context& ctx);
// obj.name: a method bound to `object`, else the item `name`, else undefined.
Value GetAttribute(const Value& object, const std::string& name);
// obj[key]: the item, else the attribute, else undefined.
Value GetItemOf(const Value& object, const Value& key);
// The interpreter's globals: range, dict, namespace, raise_exception, strftime_now, ...
void AddGlobals(Scope& globals, std::time_t now);
// Python's printf-style `format % args` for %s %r %d %i %f %%.
Value FormatPercent(const std::string& format, const Value& args);
// Elements of an iterable value (a dict iterates its keys, a string its characters).
Array Iterate(const Value& value);

}  // namespace posttrain::chat
