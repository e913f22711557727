// The chat-template engine against independent references: Jinja2 itself (Debian's
// python3-jinja2 in transformers' environment, jinja_reference.py) over the cases of
// template_cases.py, and the Jinja2 renderings of the Qwen3 template in
// ../shared/fixtures.
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "posttrain/chat/chat_template.h"
#include "posttrain/chat/conversation.h"
#include "posttrain/chat/jinja_template.h"
#include "posttrain/tokenizer/tokenizer.h"
#include "posttrain/train/tokenize.h"
#include "test_support.h"

namespace posttrain {
namespace {

using testing::DataPath;
using testing::RunCommand;
using testing::SourceDir;
using testing::TempDir;
using json = nlohmann::ordered_json;

std::vector<json> ReadJsonl(const std::string& path) {
  std::vector<json> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) rows.push_back(json::parse(line));
  }
  return rows;
}

TEST(JinjaTemplateTest, MatchesJinja2OnEveryCase) {
  const std::string dir = TempDir("jinja_cases");
  const std::string chat = SourceDir() + "/tests/framework/chat";
  std::string output;
  ASSERT_EQ(RunCommand("python3 " + chat + "/template_cases.py > " + dir + "/cases.jsonl && python3 " + chat +
                           "/jinja_reference.py " + dir + "/cases.jsonl > " + dir + "/expected.jsonl",
                       &output),
            0)
      << output << "\n(python3-jinja2 is the reference: tools/setup.sh installs it)";
  std::vector<json> rows = ReadJsonl(dir + "/expected.jsonl");
  ASSERT_GT(rows.size(), 150u);
  int texts = 0, errors = 0;
  for (const json& row : rows) {
    const json& c = row["case"];
    const json& expected = row["expected"];
    SCOPED_TRACE(c["name"].get<std::string>());
    absl::StatusOr<JinjaTemplate> t = JinjaTemplate::Parse(c["template"].get<std::string>());
    ASSERT_TRUE(t.ok()) << t.status();
    absl::StatusOr<TemplateRendering> r = t->Render(c["vars"], c["now"].get<std::time_t>());
    if (expected.contains("text")) {
      ++texts;
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->text, expected["text"].get<std::string>());
      std::vector<std::pair<std::size_t, std::size_t>> spans;
      for (const json& s : expected["spans"]) spans.emplace_back(s[0].get<std::size_t>(), s[1].get<std::size_t>());
      EXPECT_EQ(r->generation_spans, spans);
    } else {
      ++errors;
      ASSERT_FALSE(r.ok()) << "Jinja2 failed with: " << expected["error"] << "\nposttrain rendered: " << r->text;
      if (expected["raised"].get<bool>()) {
        EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
        EXPECT_EQ(r.status().message(), expected["error"].get<std::string>());
      } else {
        EXPECT_NE(r.status().code(), absl::StatusCode::kAborted) << r.status();
      }
    }
  }
  EXPECT_GT(texts, 100);
  EXPECT_GT(errors, 10);  // raise_exception, undefined values, type errors, the sandbox
}

TEST(JinjaTemplateTest, ErrorsNameTheTemplateLine) {
  auto parse_error = [](const std::string& source) {
    absl::StatusOr<JinjaTemplate> t = JinjaTemplate::Parse(source, "tpl");
    EXPECT_FALSE(t.ok());
    return std::string(t.status().message());
  };
  EXPECT_EQ(parse_error("a\nb\n{% for x in y %}\n{{ x }}"),
            "tpl:4: unexpected end of template: 'for' opened at line 3 is not closed (expected 'else' or 'endfor')");
  EXPECT_EQ(parse_error("{{ 1 + }}"), "tpl:1: unexpected end of print statement");
  EXPECT_EQ(parse_error("\n\n{% frobnicate %}"), "tpl:3: unknown tag 'frobnicate'");
  EXPECT_EQ(parse_error("{% break %}"), "tpl:1: 'break' outside a loop");
  EXPECT_EQ(parse_error("{{ 'abc }}"), "tpl:1: unterminated string");
  EXPECT_EQ(parse_error("x\n{{ a "), "tpl:2: unexpected end of template: the tag opened at line 2 is not closed with '}}'");

  absl::StatusOr<JinjaTemplate> t = JinjaTemplate::Parse("line one\n{% if true %}\n{{ messages.x.y }}\n{% endif %}", "tpl");
  ASSERT_TRUE(t.ok());
  absl::StatusOr<TemplateRendering> r = t->Render(json{{"messages", json::array()}}, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "tpl:3: 'list object' has no attribute 'x'");
  absl::StatusOr<JinjaTemplate> f = JinjaTemplate::Parse("{{ 'a' | nosuchfilter }}", "tpl");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->Render(json::object(), 0).status().message(), "tpl:1: No filter named 'nosuchfilter'.");
}

// Hostile templates get an error, never a crash: runaway recursion, deep nesting,
// huge repetitions.
TEST(JinjaTemplateTest, HostileTemplatesAreErrorsNotCrashes) {
  absl::StatusOr<JinjaTemplate> recursive = JinjaTemplate::Parse("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  ASSERT_TRUE(recursive.ok());
  absl::StatusOr<TemplateRendering> r = recursive->Render(json::object(), 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("macro calls nested more than"), std::string::npos) << r.status();
  std::string deep = "{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}";
  EXPECT_NE(JinjaTemplate::Parse(deep).status().message().find("nested too deeply"), std::string::npos);
  std::string ifs;
  for (int i = 0; i < 5000; ++i) ifs += "{% if true %}";
  EXPECT_FALSE(JinjaTemplate::Parse(ifs).ok());
  EXPECT_FALSE(JinjaTemplate::Parse("{{ 99999999999999999999999 }}").ok());
  EXPECT_FALSE(JinjaTemplate::Parse("{{ '\\uZZ' }}").ok());
  absl::StatusOr<JinjaTemplate> big = JinjaTemplate::Parse("{{ 'x' * 1000000000 }}");
  ASSERT_TRUE(big.ok());
  EXPECT_FALSE(big->Render(json::object(), 0).ok());
  absl::StatusOr<JinjaTemplate> range = JinjaTemplate::Parse("{% for i in range(1000000000) %}{% endfor %}");
  ASSERT_TRUE(range.ok());
  EXPECT_FALSE(range->Render(json::object(), 0).ok());
  // Integers are 64-bit (Python's are unbounded): a result out of range is an error,
  // never a wrapped value (and a huge exponent no long loop). Fuzzing found 99 ** 99000000.
  for (const char* text : {"{{ 2 ** 64 }}", "{{ 9223372036854775807 + 1 }}", "{{ -(-9223372036854775807 - 1) }}",
                           "{{ (-9223372036854775807 - 1) // -1 }}", "{{ 3 * 9223372036854775807 }}",
                           "{{ -9223372036854775807 - 2 }}", "{{ 2 ** 1000000000000 }}"}) {
    absl::StatusOr<JinjaTemplate> t = JinjaTemplate::Parse(text);
    ASSERT_TRUE(t.ok()) << text;
    absl::StatusOr<TemplateRendering> out = t->Render(json::object(), 0);
    ASSERT_FALSE(out.ok()) << text << " rendered " << out->text;
    EXPECT_THAT(std::string(out.status().message()), ::testing::HasSubstr("integer overflow")) << text;
  }
  // Widths and sizes a template asks for are bounded (10^8), and so is its output.
  for (const char* text : {"{{ 'x' | center(1000000000000) }}", "{{ 'a\nb' | indent(1000000000000) }}",
                           "{{ [1] | batch(1000000000000, 0) | list }}", "{{ {'a': 1} | tojson(indent=1000000000000) }}",
                           "{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}"}) {
    absl::StatusOr<JinjaTemplate> t = JinjaTemplate::Parse(text);
    ASSERT_TRUE(t.ok()) << text;
    absl::StatusOr<TemplateRendering> out = t->Render(json::object(), 0);
    ASSERT_FALSE(out.ok()) << text;
    EXPECT_THAT(std::string(out.status().message()), ::testing::ContainsRegex("too large|over 10\\^8")) << text;
  }
  absl::StatusOr<JinjaTemplate> huge = JinjaTemplate::Parse("{{ '%d' % 1e300 }}");
  ASSERT_TRUE(huge.ok());
  EXPECT_THAT(std::string(huge->Render(json::object(), 0).status().message()),
              ::testing::HasSubstr("out of the 64-bit integer range"));
  absl::StatusOr<JinjaTemplate> found = JinjaTemplate::Parse(
      testing::ReadFile(testing::SourceDir() + "/tests/fuzz/regressions/chat_template_int_power_overflow"));
  if (found.ok()) {
    EXPECT_THAT(std::string(found->Render(json::object(), 0).status().message()), ::testing::HasSubstr("integer overflow"));
  } else {
    ADD_FAILURE() << "the fuzzer's template should parse: " << found.status();
  }
}

TEST(ChatTemplateTest, Qwen3FixtureByteForByte) {
  absl::StatusOr<ChatTemplate> chat = ChatTemplate::Load(DataPath("qwen3_tokenizer"));
  ASSERT_TRUE(chat.ok()) << chat.status();
  std::vector<json> rows = ReadJsonl(DataPath("../fixtures/chat_template_qwen3_jinja2.jsonl"));
  ASSERT_EQ(rows.size(), 60u);
  for (const json& row : rows) {
    ChatRequest request;
    request.messages = row["messages"];
    if (row.contains("tools")) request.tools = row["tools"];
    request.add_generation_prompt = row.value("add_generation_prompt", false);
    request.kwargs = row.value("kwargs", json::object());
    absl::StatusOr<TemplateRendering> r = chat->Apply(request);
    if (row.contains("error")) {
      EXPECT_FALSE(r.ok());
      continue;
    }
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->text, row["text"].get<std::string>()) << row["messages"].dump();
  }
}

TEST(ChatTemplateTest, SourcesAndNamedTemplates) {
  const std::string dir = TempDir("chat_sources");
  json config = {{"eos_token", {{"content", "</s>"}, {"special", true}}},
                 {"bos_token", "<s>"},
                 {"chat_template", json::array({json{{"name", "default"}, {"template", "D{{ eos_token }}{{ bos_token }}"}},
                                                json{{"name", "tool_use"}, {"template", "T{{ tools | length }}"}}})}};
  testing::WriteFile(dir + "/tokenizer_config.json", config.dump());
  absl::StatusOr<ChatTemplate> chat = ChatTemplate::Load(dir);
  ASSERT_TRUE(chat.ok()) << chat.status();
  ChatRequest request;
  EXPECT_EQ(chat->Apply(request)->text, "D</s><s>");
  request.tools = json::array({json{{"type", "function"}}});
  EXPECT_EQ(chat->Apply(request)->text, "T1");
  EXPECT_EQ(ChatTemplate::Load(dir, "", "nope").status().message(),
            dir + "/tokenizer_config.json: chat_template: no template named 'nope' (have 'default', 'tool_use')");
  // chat_template.jinja beside the config wins; an explicit file wins over both.
  testing::WriteFile(dir + "/chat_template.jinja", "J{{ messages | length }}\n");
  EXPECT_EQ(ChatTemplate::Load(dir)->Apply(ChatRequest())->text, "J0");
  testing::WriteFile(dir + "/mine.jinja", "M");
  EXPECT_EQ(ChatTemplate::Load(dir, dir + "/mine.jinja")->Apply(ChatRequest())->text, "M");
  // No template anywhere: NotFound, naming what to do.
  const std::string empty = TempDir("chat_none");
  testing::WriteFile(empty + "/tokenizer_config.json", "{}");
  absl::Status none = ChatTemplate::Load(empty).status();
  EXPECT_EQ(none.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(none.message().find("chat_template_path"), std::string::npos) << none;
}

// Rendered Qwen3 conversations tokenize with every special and added token of the
// template (<|im_start|>, <|im_end|>, <think>, </think>, <tool_call>, ...) as its single
// id: the ids equal the text cut by hand at those tokens, each piece encoded alone.
TEST(ChatTemplateTest, Qwen3RenderingsTokenizeWithSpecialTokensAsSingleIds) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadTokenizer(DataPath("qwen3_tokenizer"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::vector<std::string> specials = {"<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>",
                                             "</tool_call>", "<tool_response>", "</tool_response>"};
  std::map<std::string, std::int64_t> special_id;
  for (const std::string& s : specials) {
    std::optional<std::int64_t> id = (*tok)->TokenToId(s);
    ASSERT_TRUE(id.has_value()) << s;
    special_id[s] = *id;
  }
  EXPECT_EQ(special_id["<|im_start|>"], 151644);
  EXPECT_EQ(special_id["<|im_end|>"], 151645);
  int rows = 0, specials_seen = 0;
  for (const json& row : ReadJsonl(DataPath("../fixtures/chat_template_qwen3_jinja2.jsonl"))) {
    if (!row.contains("text")) continue;
    const std::string text = row["text"].get<std::string>();
    std::vector<std::int64_t> expected;
    std::size_t pos = 0;
    while (pos < text.size()) {
      std::size_t next = std::string::npos;
      std::string which;
      for (const std::string& s : specials) {
        std::size_t at = text.find(s, pos);
        if (at < next) next = at, which = s;
      }
      std::vector<std::int64_t> piece = (*tok)->Encode(text.substr(pos, next == std::string::npos ? std::string::npos : next - pos));
      expected.insert(expected.end(), piece.begin(), piece.end());
      if (next == std::string::npos) break;
      expected.push_back(special_id[which]);
      ++specials_seen;
      pos = next + which.size();
    }
    EXPECT_EQ((*tok)->Encode(text), expected) << text;
    EXPECT_EQ((*tok)->Decode((*tok)->Encode(text)), text);
    ++rows;
  }
  EXPECT_EQ(rows, 60);
  EXPECT_GT(specials_seen, 300);
}

// 20 multi-turn conversations of real text (GSM8K questions and answers).
std::vector<json> MultiTurnConversations() {
  std::vector<json> qa = ReadJsonl(DataPath("gsm8k_test.jsonl"));
  std::vector<json> out;
  for (int c = 0; c < 20; ++c) {
    json messages = json::array();
    if (c % 3 == 0) messages.push_back(json{{"role", "system"}, {"content", "You solve grade-school maths."}});
    const int turns = 1 + c % 4;
    for (int t = 0; t < turns; ++t) {
      const json& row = qa[static_cast<std::size_t>(c * 4 + t)];
      messages.push_back(json{{"role", "user"}, {"content", row["question"]}});
      messages.push_back(json{{"role", "assistant"}, {"content", row["answer"]}});
    }
    out.push_back(messages);
  }
  return out;
}

TokenizedExample AssistantMasked(const ChatTemplate& chat, const Tokenizer& tok, const json& messages) {
  Example e;
  e.format = ExampleFormat::kLanguageModeling;
  e.conversation = json{{"messages", messages}};
  ConversationOptions options;
  options.assistant_spans = true;
  absl::Status s = RenderConversation(chat, e, options);
  EXPECT_TRUE(s.ok()) << s;
  TokenizeOptions t;
  t.max_length = -1;
  t.assistant_only_loss = true;
  return TokenizeExamples({e}, tok, t)[0];
}

// assistant_only_loss: a ChatML template with {% generation %} and the same template
// without it give identical masks; the mask covers exactly each assistant message's
// tokens plus its <|im_end|> (counted by encoding them alone), nothing of the users'.
TEST(ChatTemplateTest, AssistantMasksWithAndWithoutGenerationTagsAgree) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadTokenizer(DataPath("qwen3_tokenizer"));
  ASSERT_TRUE(tok.ok());
  const std::string tagged =
      "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}{% if message['role'] == 'assistant' %}"
      "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}{% else %}"
      "{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}{% endfor %}"
      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
  const std::string plain =
      "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
      "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
  absl::StatusOr<ChatTemplate> with_tags = ChatTemplate::FromSource(tagged);
  absl::StatusOr<ChatTemplate> without = ChatTemplate::FromSource(plain);
  ASSERT_TRUE(with_tags.ok() && without.ok());
  ASSERT_TRUE(with_tags->has_generation_tags());
  ASSERT_FALSE(without->has_generation_tags());
  const std::int64_t im_end = *(*tok)->TokenToId("<|im_end|>");
  for (const json& messages : MultiTurnConversations()) {
    TokenizedExample a = AssistantMasked(*with_tags, **tok, messages);
    TokenizedExample b = AssistantMasked(*without, **tok, messages);
    EXPECT_EQ(a.prompt_ids, b.prompt_ids);
    EXPECT_EQ(a.completion_ids, b.completion_ids);
    ASSERT_EQ(a.completion_mask, b.completion_mask);
    ASSERT_EQ(a.completion_mask.size(), a.completion_ids.size());
    std::size_t expected = 0, turns = 0;
    for (const json& m : messages) {
      if (m["role"] != "assistant") continue;
      expected += (*tok)->Encode(m["content"].get<std::string>() + "<|im_end|>").size();
      ++turns;
    }
    std::size_t masked = 0, masked_ends = 0;
    for (std::size_t j = 0; j < a.completion_mask.size(); ++j) {
      masked += a.completion_mask[j];
      if (a.completion_mask[j] && a.completion_ids[j] == im_end) ++masked_ends;
    }
    EXPECT_EQ(masked, expected);
    EXPECT_EQ(masked_ends, turns);  // the end-of-turn token belongs to the assistant
    // The prompt ends with the first assistant header; no user token is masked.
    std::vector<std::int64_t> header = (*tok)->Encode("<|im_start|>assistant\n");
    ASSERT_GE(a.prompt_ids.size(), header.size());
    EXPECT_TRUE(std::equal(header.begin(), header.end(), a.prompt_ids.end() - static_cast<std::ptrdiff_t>(header.size())));
  }
}

// A template that is not prefix-preserving (it drops earlier turns' reasoning, as
// Qwen3's does) is refused by name for assistant_only_loss, never an empty mask.
TEST(ChatTemplateTest, NonPrefixPreservingTemplateIsRefusedForAssistantMasks) {
  absl::StatusOr<ChatTemplate> qwen3 = ChatTemplate::Load(DataPath("qwen3_tokenizer"));
  ASSERT_TRUE(qwen3.ok());
  Example e;
  e.format = ExampleFormat::kLanguageModeling;
  e.source = "conv.jsonl";
  e.line = 7;
  e.conversation = json{{"messages", json::array({json{{"role", "user"}, {"content", "a"}},
                                                  json{{"role", "assistant"}, {"content", "b"}},
                                                  json{{"role", "user"}, {"content", "c"}},
                                                  json{{"role", "assistant"}, {"content", "d"}}})}};
  ConversationOptions options;
  options.assistant_spans = true;
  absl::Status s = RenderConversation(*qwen3, e, options);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("conv.jsonl:7"), std::string::npos) << s;
  EXPECT_NE(s.message().find("not prefix-preserving at message 1"), std::string::npos) << s;
  // One turn is fine: the assistant span starts after the generation prompt and
  // includes the empty think block Qwen3 writes for the last turn.
  Example single = e;
  single.conversation["messages"].erase(2);
  single.conversation["messages"].erase(2);
  ASSERT_TRUE(RenderConversation(*qwen3, single, options).ok());
  ASSERT_EQ(single.assistant_spans.size(), 1u);
  EXPECT_EQ(single.text.substr(single.assistant_spans[0].first,
                               single.assistant_spans[0].second - single.assistant_spans[0].first),
            "<think>\n\n</think>\n\nb<|im_end|>");
}

// TRL's formats, rendered: prompt with its generation prompt, completion = the rest.
TEST(ChatTemplateTest, PreferenceAndPromptOnlyConversationsRenderAsTrl) {
  absl::StatusOr<ChatTemplate> qwen3 = ChatTemplate::Load(DataPath("qwen3_tokenizer"));
  ASSERT_TRUE(qwen3.ok());
  Example e;
  e.format = ExampleFormat::kPreference;
  e.conversation = json{{"prompt", json::array({json{{"role", "user"}, {"content", "2+2?"}}})},
                        {"chosen", json::array({json{{"role", "assistant"}, {"content", "4"}}})},
                        {"rejected", json::array({json{{"role", "assistant"}, {"content", "5"}}})}};
  ASSERT_TRUE(RenderConversation(*qwen3, e).ok());
  EXPECT_EQ(e.prompt, "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(e.chosen, "<think>\n\n</think>\n\n4<|im_end|>\n");
  EXPECT_EQ(e.rejected, "<think>\n\n</think>\n\n5<|im_end|>\n");
  Example p;
  p.format = ExampleFormat::kPromptOnly;
  p.conversation = json{{"prompt", json::array({json{{"role", "system"}, {"content", "S"}}, json{{"role", "user"}, {"content", "U"}}})}};
  ASSERT_TRUE(RenderConversation(*qwen3, p).ok());
  EXPECT_EQ(p.prompt, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadTokenizer(DataPath("qwen3_tokenizer"));
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ(EndOfTurnTokenIds(*qwen3, **tok), std::vector<std::int64_t>{151645});
}

}  // namespace
}  // namespace posttrain
