// Chat templates (tokenizer_config.json's chat_template: Jinja2 from the internet):
// parsed, then rendered with a conversation, tools and the usual variables.
#include "posttrain/chat/jinja_template.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto t = posttrain::JinjaTemplate::Parse(std::string(reinterpret_cast<const char*>(data), size));
  if (!t.ok()) return 0;
  static const nlohmann::ordered_json variables = nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                 {"role": "assistant", "content": "Hello", "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})");
  (void)t->Render(variables, 0);
  return 0;
}
