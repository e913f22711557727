// The chat-template lexer: template source → tokens, with Jinja2's whitespace rules
// applied to the text between tags (transformers' environment: trim_blocks,
// lstrip_blocks, keep_trailing_newline off).
//
//   {{ expr }}   kVariableBegin ... kVariableEnd
//   {% stmt %}   kBlockBegin ... kBlockEnd
//   {# ... #}    dropped (its whitespace rules still apply)
//   {%- / -%}    strip all whitespace before / after the tag
//   {%+          keep the line's indentation despite lstrip_blocks
//   {% raw %}…{% endraw %}   literal text
//
// Every token carries its 1-based line for error messages.
#pragma once

#include <string>
#include <vector>

namespace posttrain::chat {

struct Token {
  enum class Type {
    kText,
    kVariableBegin,
    kVariableEnd,
    kBlockBegin,
    kBlockEnd,
    kName,
    kString,
    kInteger,
    kFloat,
    kOperator,  // + - * / // % ** ~ | . , : ( ) [ ] { } = == != < <= > >=
    kEnd,
  };
  Type type;
  std::string text;  // the text, name, operator, or the string literal's value
  int line = 1;
};

// Throws TemplateError (value.h) naming the line of an unterminated tag or string
// or an unexpected character.
std::vector<Token> Tokenize(std::string source);

}  // namespace posttrain::chat
