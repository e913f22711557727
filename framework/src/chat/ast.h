// The chat-template syntax tree: expressions evaluate to Values, statements render
// text. Built by parser.cc, evaluated by evaluate.cc (the Eval/Render bodies), with
// the filters, tests, methods and globals of builtins.cc.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "value.h"

namespace posttrain::chat {

class Context;

struct Expr {
  explicit Expr(int line) : line(line) {}
  virtual ~Expr() = default;
  virtual Value Eval(Context& ctx) const = 0;
  int line;
};
using ExprPtr = std::unique_ptr<Expr>;

struct CallArgs {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
  Arguments Eval(Context& ctx) const;
};

struct Literal : Expr {
  Literal(int line, Value v) : Expr(line), value(std::move(v)) {}
  Value Eval(Context& ctx) const override;
  Value value;
};

struct NameExpr : Expr {
  NameExpr(int line, std::string n) : Expr(line), name(std::move(n)) {}
  Value Eval(Context& ctx) const override;
  std::string name;
};

struct ListExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  std::vector<ExprPtr> items;
  bool tuple = false;
};

// a < b <= c ...: Python's chained comparison (each operand evaluated once).
struct CompareExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  ExprPtr first;
  std::vector<std::pair<std::string, ExprPtr>> rest;  // == != < <= > >= in notin
};

struct DictExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
};

// obj.name (attribute first, then item) and obj[key] (item first, then attribute).
struct GetAttr : Expr {
  GetAttr(int line, ExprPtr o, std::string n) : Expr(line), object(std::move(o)), name(std::move(n)) {}
  Value Eval(Context& ctx) const override;
  ExprPtr object;
  std::string name;
};

struct GetItem : Expr {
  GetItem(int line, ExprPtr o, ExprPtr k) : Expr(line), object(std::move(o)), key(std::move(k)) {}
  Value Eval(Context& ctx) const override;
  ExprPtr object, key;
};

struct SliceExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  ExprPtr object, start, stop, step;  // any of the three bounds may be null
};

struct CallExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  ExprPtr callee;
  CallArgs args;
};

// operand | name(args); `operand` is null inside {% filter %} blocks until rendered.
struct FilterExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  Value Apply(Context& ctx, Value operand) const;
  ExprPtr operand;
  std::string name;
  CallArgs args;
};

struct TestExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  ExprPtr operand;
  std::string name;
  CallArgs args;
  bool negated = false;
};

struct UnaryExpr : Expr {
  UnaryExpr(int line, std::string o, ExprPtr e) : Expr(line), op(std::move(o)), operand(std::move(e)) {}
  Value Eval(Context& ctx) const override;
  std::string op;  // "not", "-", "+"
  ExprPtr operand;
};

struct BinaryExpr : Expr {
  BinaryExpr(int line, std::string o, ExprPtr l, ExprPtr r)
      : Expr(line), op(std::move(o)), left(std::move(l)), right(std::move(r)) {}
  Value Eval(Context& ctx) const override;
  std::string op;  // or and == != < <= > >= in notin + - * / // % ** ~
  ExprPtr left, right;
};

struct CondExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  ExprPtr condition, then, otherwise;  // `otherwise` may be null (undefined)
};

// What a statement tells the enclosing loop.
enum class Flow { kNormal, kBreak, kContinue };

struct Stmt {
  explicit Stmt(int line) : line(line) {}
  virtual ~Stmt() = default;
  virtual Flow Render(Context& ctx, std::string& out) const = 0;
  int line;
};
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

// Renders `body`, stopping at break/continue; names the line of any error.
Flow RenderBody(const Body& body, Context& ctx, std::string& out);

struct TextStmt : Stmt {
  TextStmt(int line, std::string t) : Stmt(line), text(std::move(t)) {}
  Flow Render(Context& ctx, std::string& out) const override;
  std::string text;
};

struct OutputStmt : Stmt {
  OutputStmt(int line, ExprPtr e) : Stmt(line), expr(std::move(e)) {}
  Flow Render(Context& ctx, std::string& out) const override;
  ExprPtr expr;
};

struct IfStmt : Stmt {
  using Stmt::Stmt;
  Flow Render(Context& ctx, std::string& out) const override;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body otherwise;
};

struct ForStmt : Stmt {
  using Stmt::Stmt;
  Flow Render(Context& ctx, std::string& out) const override;
  std::vector<std::string> targets;  // one name, or several to unpack
  ExprPtr iterable, filter;          // `filter` may be null
  Body body, otherwise;
};

// {% set a = x %}, {% set a, b = x %}, {% set ns.attr = x %}, {% set a %}...{% endset %}.
struct SetStmt : Stmt {
  using Stmt::Stmt;
  Flow Render(Context& ctx, std::string& out) const override;
  std::vector<std::string> targets;
  std::string attribute;  // set targets[0].attribute = value
  ExprPtr value;          // null for the block form
  Body body;
  std::vector<std::unique_ptr<FilterExpr>> filters;  // {% set a | upper %}...
};

struct MacroStmt : Stmt {
  using Stmt::Stmt;
  Flow Render(Context& ctx, std::string& out) const override;
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // default may be null
  std::shared_ptr<Body> body;
};

// {% call(args) macro(...) %}body{% endcall %}: the macro sees `caller()`.
struct CallBlockStmt : Stmt {
  using Stmt::Stmt;
  Flow Render(Context& ctx, std::string& out) const override;
  std::unique_ptr<CallExpr> call;
  std::vector<std::pair<std::string, ExprPtr>> params;
  std::shared_ptr<Body> body;
};

struct FilterBlockStmt : Stmt {
  using Stmt::Stmt;
  Flow Render(Context& ctx, std::string& out) const override;
  std::vector<std::unique_ptr<FilterExpr>> filters;
  Body body;
};

struct WithStmt : Stmt {
  using Stmt::Stmt;
  Flow Render(Context& ctx, std::string& out) const override;
  std::vector<std::pair<std::string, ExprPtr>> assignments;
  Body body;
};

struct LoopControlStmt : Stmt {
  LoopControlStmt(int line, Flow f) : Stmt(line), flow(f) {}
  Flow Render(Context& ctx, std::string& out) const override;
  Flow flow;
};

// {% generation %}...{% endgeneration %}: marks assistant text (transformers'
// return_assistant_tokens_mask).
struct GenerationStmt : Stmt {
  using Stmt::Stmt;
  Flow Render(Context& ctx, std::string& out) const override;
  Body body;
};

// Parses a token stream (lexer.h) into a body; throws TemplateError with the line.
Body Parse(const std::vector<struct Token>& tokens);

}  // namespace posttrain::chat
