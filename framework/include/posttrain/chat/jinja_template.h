// A Jinja2 interpreter for chat templates, with the environment transformers uses in
// `apply_chat_template`: ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
// the loopcontrols extension, `tojson` keeping non-ASCII (json.dumps(ensure_ascii=False),
// keys in insertion order), `raise_exception(msg)` and `strftime_now(fmt)`, and
// transformers' `{% generation %}` tag.
//
//   POSTTRAIN_ASSIGN_OR_RETURN(JinjaTemplate t, JinjaTemplate::Parse(source));
//   nlohmann::ordered_json vars = {{"messages", messages}, {"add_generation_prompt", true}};
//   POSTTRAIN_ASSIGN_OR_RETURN(TemplateRendering r, t.Render(vars, std::time(nullptr)));
//
// Supported: {{ }}, {% %}, {# #}, whitespace control (- and +), if/elif/else, for with
// loop.* / else / an `if` filter / unpacking, break/continue, set (incl. namespace
// attributes and block set), macro (defaults, varargs, kwargs, caller), call, filter
// and with blocks, raw; literals, lists, tuples, dicts, attribute and item access,
// slicing, calls with keyword arguments, `in`, `~`, arithmetic, comparisons, the
// conditional expression; Jinja2's filters, tests and the str/dict methods templates
// use (see src/chat/builtins.cc). Undefined values follow Jinja2's default Undefined:
// printing gives "", iteration nothing, attribute access and arithmetic an error.
// Not supported: template inheritance and includes (chat templates are single files),
// recursive loops, autoescaping.
//
// Errors: Parse returns InvalidArgument "<name>:<line>: <what>". Render returns Aborted
// with the template's own message when it calls raise_exception(msg), and
// InvalidArgument "<name>:<line>: <what>" for any other error (an undefined value used,
// a type error, ...). Thread-safety: a parsed template may render from several threads.
#pragma once

#include <cstddef>
#include <ctime>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace posttrain {

struct TemplateRendering {
  std::string text;
  // Byte ranges [begin, end) of `text` rendered inside {% generation %} blocks.
  std::vector<std::pair<std::size_t, std::size_t>> generation_spans;
};

class JinjaTemplate {
 public:
  JinjaTemplate();
  ~JinjaTemplate();
  JinjaTemplate(JinjaTemplate&&) noexcept;
  JinjaTemplate& operator=(JinjaTemplate&&) noexcept;
  JinjaTemplate(const JinjaTemplate&) = default;
  JinjaTemplate& operator=(const JinjaTemplate&) = default;

  // `name` prefixes error messages ("chat_template:12: ...").
  static absl::StatusOr<JinjaTemplate> Parse(std::string source, std::string name = "chat_template");

  // `variables` become the template's variables (JSON objects keep their key order).
  // `now` is what strftime_now formats (local time).
  absl::StatusOr<TemplateRendering> Render(const nlohmann::ordered_json& variables, std::time_t now) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace posttrain
