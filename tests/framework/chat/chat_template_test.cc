// The chat-template engine against independent references: Jinja2 itself (Debian's
// python3-jinja2 in transformers' environment, jinja_reference.py) over the cases of
// template_cases.py, and the Jinja2 renderings of the Qwen3 template in
// ../shared/fixtures.
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "posttrain/chat/chat_template.h"
#include "posttrain/chat/jinja_template.h"
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

}  // namespace
}  // namespace posttrain
