// Recursive descent over Jinja2's grammar, with its operator precedence:
//   cond-expr: or-expr ['if' or-expr ['else' cond-expr]]
//   or < and < not < comparisons/in < + - < ~ < * / // % < ** < unary - + < filters and tests
//   postfix: .name  [key]  [a:b:c]  (args)
#include <set>

#include "absl/strings/str_cat.h"
#include "ast.h"
#include "lexer.h"

namespace posttrain::chat {
namespace {

using T = Token::Type;

// Nesting beyond this is refused (a hostile template must not overflow the stack).
constexpr int kMaxNesting = 200;

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : tokens_(tokens) {}

  Body ParseTemplate() {
    std::string end;
    Body body = ParseBody({}, &end);
    return body;
  }

 private:
  const Token& Peek(std::size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  const Token& Next() { return tokens_[std::min(pos_++, tokens_.size() - 1)]; }
  bool IsOp(const char* op, std::size_t ahead = 0) const {
    return Peek(ahead).type == T::kOperator && Peek(ahead).text == op;
  }
  bool IsName(const char* name, std::size_t ahead = 0) const {
    return Peek(ahead).type == T::kName && Peek(ahead).text == name;
  }
  bool SkipOp(const char* op) {
    if (!IsOp(op)) return false;
    ++pos_;
    return true;
  }
  bool SkipName(const char* name) {
    if (!IsName(name)) return false;
    ++pos_;
    return true;
  }
  [[noreturn]] void Fail(const std::string& message) const { throw TemplateError(message, Peek().line); }
  static std::string Describe(const Token& t) {
    switch (t.type) {
      case T::kEnd: return "end of template";
      case T::kBlockEnd: return "end of statement block";
      case T::kVariableEnd: return "end of print statement";
      case T::kString: return "string";
      default: return absl::StrCat("'", t.text, "'");
    }
  }
  void ExpectOp(const char* op) {
    if (!SkipOp(op)) Fail(absl::StrCat("expected '", op, "', got ", Describe(Peek())));
  }
  std::string ExpectName() {
    if (Peek().type != T::kName) Fail(absl::StrCat("expected a name, got ", Describe(Peek())));
    return Next().text;
  }
  void ExpectBlockEnd() {
    if (Peek().type != T::kBlockEnd) Fail(absl::StrCat("expected end of statement block, got ", Describe(Peek())));
    ++pos_;
  }

  // Statements up to one of `ends` ({% endfor %}, {% else %}, ...); the keyword found
  // goes to *end (the tag's remaining tokens are left for the caller).
  Body ParseBody(const std::set<std::string>& ends, std::string* end, int opened_line = 0,
                 const char* opened = nullptr) {
    Body body;
    while (true) {
      const Token& t = Peek();
      if (t.type == T::kEnd) {
        if (ends.empty()) return body;
        throw TemplateError(absl::StrCat("unexpected end of template: '", opened, "' opened at line ",
                                         opened_line, " is not closed (expected ", Join(ends), ")"),
                            t.line);
      }
      if (t.type == T::kText) {
        body.push_back(std::make_unique<TextStmt>(t.line, t.text));
        ++pos_;
      } else if (t.type == T::kVariableBegin) {
        ++pos_;
        ExprPtr e = ParseExpression();
        if (Peek().type != T::kVariableEnd) Fail(absl::StrCat("expected end of print statement, got ", Describe(Peek())));
        ++pos_;
        body.push_back(std::make_unique<OutputStmt>(t.line, std::move(e)));
      } else if (t.type == T::kBlockBegin) {
        const Token& keyword = Peek(1);
        if (keyword.type == T::kName && ends.count(keyword.text)) {
          pos_ += 2;
          *end = keyword.text;
          return body;
        }
        ++pos_;
        body.push_back(ParseStatement());
      } else {
        Fail(absl::StrCat("unexpected ", Describe(t)));
      }
    }
  }

  static std::string Join(const std::set<std::string>& names) {
    std::string out;
    for (const std::string& n : names) absl::StrAppend(&out, out.empty() ? "" : " or ", "'", n, "'");
    return out;
  }

  // Counts nesting of statements and expressions for the duration of a parse call.
  struct Nest {
    explicit Nest(Parser& p) : p(p) {
      if (++p.depth_ > kMaxNesting) {
        throw TemplateError(absl::StrCat("template nested too deeply (more than ", kMaxNesting, " levels)"), p.Peek().line);
      }
    }
    ~Nest() { --p.depth_; }
    Parser& p;
  };

  StmtPtr ParseStatement() {
    Nest nest(*this);
    int line = Peek().line;
    if (Peek().type != T::kName) Fail(absl::StrCat("expected a statement name, got ", Describe(Peek())));
    std::string keyword = Next().text;
    if (keyword == "if") return ParseIf(line);
    if (keyword == "for") return ParseFor(line);
    if (keyword == "set") return ParseSet(line);
    if (keyword == "macro") return ParseMacro(line);
    if (keyword == "call") return ParseCallBlock(line);
    if (keyword == "filter") return ParseFilterBlock(line);
    if (keyword == "with") return ParseWith(line);
    if (keyword == "generation") {
      ExpectBlockEnd();
      auto stmt = std::make_unique<GenerationStmt>(line);
      std::string end;
      stmt->body = ParseBody({"endgeneration"}, &end, line, "generation");
      ExpectBlockEnd();
      return stmt;
    }
    if (keyword == "break" || keyword == "continue") {
      if (loop_depth_ == 0) throw TemplateError(absl::StrCat("'", keyword, "' outside a loop"), line);
      ExpectBlockEnd();
      return std::make_unique<LoopControlStmt>(line, keyword == "break" ? Flow::kBreak : Flow::kContinue);
    }
    static const std::set<std::string> kEnds = {"endif", "endfor", "endset", "endmacro", "endcall", "endfilter",
                                                "endwith", "endgeneration", "else", "elif"};
    if (kEnds.count(keyword)) throw TemplateError(absl::StrCat("unexpected '", keyword, "'"), line);
    throw TemplateError(absl::StrCat("unknown tag '", keyword, "'"), line);
  }

  StmtPtr ParseIf(int line) {
    auto stmt = std::make_unique<IfStmt>(line);
    ExprPtr condition = ParseExpression();
    ExpectBlockEnd();
    while (true) {
      std::string end;
      Body body = ParseBody({"elif", "else", "endif"}, &end, line, "if");
      stmt->branches.emplace_back(std::move(condition), std::move(body));
      if (end == "elif") {
        condition = ParseExpression();
        ExpectBlockEnd();
        continue;
      }
      ExpectBlockEnd();
      if (end == "else") {
        stmt->otherwise = ParseBody({"endif"}, &end, line, "if");
        ExpectBlockEnd();
      }
      return stmt;
    }
  }

  StmtPtr ParseFor(int line) {
    auto stmt = std::make_unique<ForStmt>(line);
    bool parenthesised = SkipOp("(");
    do {
      stmt->targets.push_back(ExpectName());
    } while (SkipOp(","));
    if (parenthesised) ExpectOp(")");
    if (!SkipName("in")) Fail(absl::StrCat("expected 'in', got ", Describe(Peek())));
    stmt->iterable = ParseTupleOrExpression(/*allow_condition=*/false);
    if (SkipName("if")) stmt->filter = ParseExpression();
    if (SkipName("recursive")) throw TemplateError("recursive loops are not supported", line);
    ExpectBlockEnd();
    ++loop_depth_;
    std::string end;
    stmt->body = ParseBody({"else", "endfor"}, &end, line, "for");
    --loop_depth_;
    ExpectBlockEnd();
    if (end == "else") {
      stmt->otherwise = ParseBody({"endfor"}, &end, line, "for");
      ExpectBlockEnd();
    }
    return stmt;
  }

  StmtPtr ParseSet(int line) {
    auto stmt = std::make_unique<SetStmt>(line);
    stmt->targets.push_back(ExpectName());
    if (SkipOp(".")) {
      stmt->attribute = ExpectName();
    } else {
      while (SkipOp(",")) stmt->targets.push_back(ExpectName());
    }
    if (SkipOp("=")) {
      stmt->value = ParseTupleOrExpression(/*allow_condition=*/true);
      ExpectBlockEnd();
      return stmt;
    }
    while (SkipOp("|")) stmt->filters.push_back(ParseFilter(nullptr));
    ExpectBlockEnd();
    std::string end;
    stmt->body = ParseBody({"endset"}, &end, line, "set");
    ExpectBlockEnd();
    return stmt;
  }

  std::vector<std::pair<std::string, ExprPtr>> ParseParams() {
    std::vector<std::pair<std::string, ExprPtr>> params;
    ExpectOp("(");
    while (!SkipOp(")")) {
      if (!params.empty()) ExpectOp(",");
      if (SkipOp(")")) break;
      std::string name = ExpectName();
      ExprPtr fallback;
      if (SkipOp("=")) fallback = ParseExpression();
      params.emplace_back(std::move(name), std::move(fallback));
    }
    return params;
  }

  StmtPtr ParseMacro(int line) {
    auto stmt = std::make_unique<MacroStmt>(line);
    stmt->name = ExpectName();
    stmt->params = ParseParams();
    ExpectBlockEnd();
    int saved = loop_depth_;
    loop_depth_ = 0;
    std::string end;
    stmt->body = std::make_shared<Body>(ParseBody({"endmacro"}, &end, line, "macro"));
    loop_depth_ = saved;
    ExpectBlockEnd();
    return stmt;
  }

  StmtPtr ParseCallBlock(int line) {
    auto stmt = std::make_unique<CallBlockStmt>(line);
    if (IsOp("(")) stmt->params = ParseParams();
    ExprPtr call = ParseExpression();
    auto* as_call = dynamic_cast<CallExpr*>(call.get());
    if (as_call == nullptr) throw TemplateError("expected a call in {% call %}", line);
    call.release();
    stmt->call.reset(as_call);
    ExpectBlockEnd();
    std::string end;
    stmt->body = std::make_shared<Body>(ParseBody({"endcall"}, &end, line, "call"));
    ExpectBlockEnd();
    return stmt;
  }

  StmtPtr ParseFilterBlock(int line) {
    auto stmt = std::make_unique<FilterBlockStmt>(line);
    do {
      stmt->filters.push_back(ParseFilter(nullptr));
    } while (SkipOp("|"));
    ExpectBlockEnd();
    std::string end;
    stmt->body = ParseBody({"endfilter"}, &end, line, "filter");
    ExpectBlockEnd();
    return stmt;
  }

  StmtPtr ParseWith(int line) {
    auto stmt = std::make_unique<WithStmt>(line);
    while (Peek().type != T::kBlockEnd) {
      if (!stmt->assignments.empty()) ExpectOp(",");
      std::string name = ExpectName();
      ExpectOp("=");
      stmt->assignments.emplace_back(std::move(name), ParseExpression());
    }
    ExpectBlockEnd();
    std::string end;
    stmt->body = ParseBody({"endwith"}, &end, line, "with");
    ExpectBlockEnd();
    return stmt;
  }

  // `a, b` without brackets is a tuple (for-loop iterables, set values).
  ExprPtr ParseTupleOrExpression(bool allow_condition) {
    int line = Peek().line;
    ExprPtr first = allow_condition ? ParseExpression() : ParseOr();
    if (!IsOp(",")) return first;
    auto list = std::make_unique<ListExpr>(line);
    list->tuple = true;
    list->items.push_back(std::move(first));
    while (SkipOp(",")) {
      if (Peek().type == T::kBlockEnd || IsName("if")) break;
      list->items.push_back(allow_condition ? ParseExpression() : ParseOr());
    }
    return list;
  }

  ExprPtr ParseExpression() {
    Nest nest(*this);
    ExprPtr expr = ParseOr();
    while (IsName("if")) {
      int line = Next().line;
      auto cond = std::make_unique<CondExpr>(line);
      cond->then = std::move(expr);
      cond->condition = ParseOr();
      if (SkipName("else")) cond->otherwise = ParseExpression();
      expr = std::move(cond);
    }
    return expr;
  }

  ExprPtr ParseOr() {
    ExprPtr left = ParseAnd();
    while (IsName("or")) {
      int line = Next().line;
      left = std::make_unique<BinaryExpr>(line, "or", std::move(left), ParseAnd());
    }
    return left;
  }

  ExprPtr ParseAnd() {
    ExprPtr left = ParseNot();
    while (IsName("and")) {
      int line = Next().line;
      left = std::make_unique<BinaryExpr>(line, "and", std::move(left), ParseNot());
    }
    return left;
  }

  ExprPtr ParseNot() {
    if (IsName("not")) {
      int line = Next().line;
      return std::make_unique<UnaryExpr>(line, "not", ParseNot());
    }
    return ParseCompare();
  }

  ExprPtr ParseCompare() {
    ExprPtr left = ParseMath1();
    std::unique_ptr<CompareExpr> chain;
    while (true) {
      int line = Peek().line;
      std::string op;
      if (Peek().type == T::kOperator &&
          (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" || Peek().text == "<=" ||
           Peek().text == ">" || Peek().text == ">=")) {
        op = Next().text;
      } else if (IsName("in")) {
        ++pos_;
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        pos_ += 2;
        op = "notin";
      } else {
        if (chain) return chain;
        return left;
      }
      if (!chain) {
        chain = std::make_unique<CompareExpr>(line);
        chain->first = std::move(left);
      }
      chain->rest.emplace_back(op, ParseMath1());
    }
  }

  ExprPtr ParseMath1() {
    ExprPtr left = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      const Token& t = Next();
      left = std::make_unique<BinaryExpr>(t.line, t.text, std::move(left), ParseConcat());
    }
    return left;
  }

  ExprPtr ParseConcat() {
    ExprPtr left = ParseMath2();
    while (IsOp("~")) {
      int line = Next().line;
      left = std::make_unique<BinaryExpr>(line, "~", std::move(left), ParseMath2());
    }
    return left;
  }

  ExprPtr ParseMath2() {
    ExprPtr left = ParsePow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token& t = Next();
      left = std::make_unique<BinaryExpr>(t.line, t.text, std::move(left), ParsePow());
    }
    return left;
  }

  ExprPtr ParsePow() {
    ExprPtr left = ParseUnary(true);
    while (IsOp("**")) {
      int line = Next().line;
      left = std::make_unique<BinaryExpr>(line, "**", std::move(left), ParseUnary(true));
    }
    return left;
  }

  ExprPtr ParseUnary(bool with_filters) {
    Nest nest(*this);
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      const Token& t = Next();
      node = std::make_unique<UnaryExpr>(t.line, t.text, ParseUnary(false));
    } else {
      node = ParsePostfix(ParsePrimary());
    }
    if (with_filters) node = ParseFiltersAndTests(std::move(node));
    return node;
  }

  ExprPtr ParsePrimary() {
    const Token& t = Next();
    switch (t.type) {
      case T::kName: {
        if (t.text == "true" || t.text == "True") return std::make_unique<Literal>(t.line, Value(true));
        if (t.text == "false" || t.text == "False") return std::make_unique<Literal>(t.line, Value(false));
        if (t.text == "none" || t.text == "None") return std::make_unique<Literal>(t.line, Value::None());
        return std::make_unique<NameExpr>(t.line, t.text);
      }
      case T::kString: {
        std::string s = t.text;
        while (Peek().type == T::kString) s += Next().text;  // adjacent literals concatenate
        return std::make_unique<Literal>(t.line, Value(std::move(s)));
      }
      case T::kInteger: return std::make_unique<Literal>(t.line, Value(static_cast<std::int64_t>(std::stoll(t.text))));
      case T::kFloat: return std::make_unique<Literal>(t.line, Value(std::stod(t.text)));
      case T::kOperator:
        if (t.text == "(") {
          if (SkipOp(")")) {
            auto empty = std::make_unique<ListExpr>(t.line);  // the empty tuple
            empty->tuple = true;
            return empty;
          }
          ExprPtr e = ParseExpression();
          if (IsOp(",")) {
            auto list = std::make_unique<ListExpr>(t.line);
            list->tuple = true;
            list->items.push_back(std::move(e));
            while (SkipOp(",")) {
              if (IsOp(")")) break;
              list->items.push_back(ParseExpression());
            }
            e = std::move(list);
          }
          ExpectOp(")");
          return e;
        }
        if (t.text == "[") {
          auto list = std::make_unique<ListExpr>(t.line);
          while (!SkipOp("]")) {
            if (!list->items.empty()) ExpectOp(",");
            if (SkipOp("]")) break;
            list->items.push_back(ParseExpression());
          }
          return list;
        }
        if (t.text == "{") {
          auto dict = std::make_unique<DictExpr>(t.line);
          while (!SkipOp("}")) {
            if (!dict->items.empty()) ExpectOp(",");
            if (SkipOp("}")) break;
            ExprPtr key = ParseExpression();
            ExpectOp(":");
            dict->items.emplace_back(std::move(key), ParseExpression());
          }
          return dict;
        }
        break;
      default: break;
    }
    throw TemplateError(absl::StrCat("unexpected ", Describe(t)), t.line);
  }

  ExprPtr ParsePostfix(ExprPtr node) {
    while (true) {
      int line = Peek().line;
      if (SkipOp(".")) {
        const Token& t = Next();
        if (t.type == T::kName) {
          node = std::make_unique<GetAttr>(line, std::move(node), t.text);
        } else if (t.type == T::kInteger) {
          node = std::make_unique<GetItem>(line, std::move(node),
                                           std::make_unique<Literal>(line, Value(static_cast<std::int64_t>(std::stoll(t.text)))));
        } else {
          throw TemplateError(absl::StrCat("expected an attribute name after '.', got ", Describe(t)), line);
        }
      } else if (SkipOp("[")) {
        node = ParseSubscript(std::move(node), line);
      } else if (IsOp("(")) {
        auto call = std::make_unique<CallExpr>(line);
        call->callee = std::move(node);
        call->args = ParseCallArgs();
        node = std::move(call);
      } else {
        return node;
      }
    }
  }

  ExprPtr ParseSubscript(ExprPtr object, int line) {
    ExprPtr parts[3];
    int colons = 0;
    while (!IsOp("]")) {
      if (SkipOp(":")) {
        if (++colons > 2) Fail("too many ':' in a slice");
        continue;
      }
      if (parts[colons]) Fail(absl::StrCat("expected ']' or ':', got ", Describe(Peek())));
      parts[colons] = ParseExpression();
    }
    ExpectOp("]");
    if (colons == 0) {
      if (!parts[0]) throw TemplateError("expected a subscript", line);
      return std::make_unique<GetItem>(line, std::move(object), std::move(parts[0]));
    }
    auto slice = std::make_unique<SliceExpr>(line);
    slice->object = std::move(object);
    slice->start = std::move(parts[0]);
    slice->stop = std::move(parts[1]);
    slice->step = std::move(parts[2]);
    return slice;
  }

  CallArgs ParseCallArgs() {
    CallArgs args;
    ExpectOp("(");
    bool first = true;
    while (!SkipOp(")")) {
      if (!first) ExpectOp(",");
      first = false;
      if (SkipOp(")")) break;
      if (Peek().type == T::kName && IsOp("=", 1)) {
        std::string name = Next().text;
        ++pos_;
        args.keyword.emplace_back(std::move(name), ParseExpression());
      } else {
        if (!args.keyword.empty()) Fail("positional argument follows keyword argument");
        args.positional.push_back(ParseExpression());
      }
    }
    return args;
  }

  std::unique_ptr<FilterExpr> ParseFilter(ExprPtr operand) {
    auto filter = std::make_unique<FilterExpr>(Peek().line);
    filter->operand = std::move(operand);
    filter->name = ExpectName();
    while (SkipOp(".")) filter->name += "." + ExpectName();
    if (IsOp("(")) filter->args = ParseCallArgs();
    return filter;
  }

  ExprPtr ParseFiltersAndTests(ExprPtr node) {
    while (true) {
      if (SkipOp("|")) {
        node = ParseFilter(std::move(node));
      } else if (IsName("is")) {
        auto test = std::make_unique<TestExpr>(Next().line);
        test->operand = std::move(node);
        test->negated = SkipName("not");
        test->name = ExpectName();
        while (SkipOp(".")) test->name += "." + ExpectName();
        if (IsOp("(")) {
          test->args = ParseCallArgs();
        } else if (StartsArgument()) {
          test->args.positional.push_back(ParsePostfix(ParsePrimary()));
        }
        node = std::move(test);
      } else if (IsOp("(")) {
        auto call = std::make_unique<CallExpr>(Peek().line);
        call->callee = std::move(node);
        call->args = ParseCallArgs();
        node = std::move(call);
      } else {
        return node;
      }
    }
  }

  // `x is divisibleby 3`: a test may take one argument without parentheses.
  bool StartsArgument() const {
    const Token& t = Peek();
    if (t.type == T::kString || t.type == T::kInteger || t.type == T::kFloat) return true;
    if (t.type == T::kOperator) return t.text == "[" || t.text == "{";
    if (t.type != T::kName) return false;
    static const std::set<std::string> kStop = {"else", "or", "and", "if", "in", "not", "is"};
    return kStop.count(t.text) == 0;
  }

  const std::vector<Token>& tokens_;
  std::size_t pos_ = 0;
  int loop_depth_ = 0;
  int depth_ = 0;
};

}  // namespace

Body Parse(const std::vector<Token>& tokens) { return Parser(tokens).ParseTemplate(); }

}  // namespace posttrain::chat
