// Conversations rendered with a chat template and tokenized, per second.
//
//   build/bin/chat_bench [--data ../shared/data] [--conversations recipes/data/orca_dpo_pairs_validation.jsonl]
//                        [--repeat 3] [--max N]
//
// The Orca conversations (system + user + the preferred answer: 284, ~3 kB each)
// through Qwen3's chat template and tokenizer: rendering alone on one thread, then
// rendering + tokenization on one thread and on every oneTBB worker (the engine's
// data stage), then with assistant masks (rendering every assistant turn's prefix).
#include <chrono>
#include <cstdio>
#include <string>

#include "absl/strings/str_split.h"
#include "posttrain/chat/chat_template.h"
#include "posttrain/chat/conversation.h"
#include "posttrain/core/text_file.h"
#include "posttrain/core/threads.h"
#include "posttrain/tokenizer/tokenizer.h"
#include "posttrain/train/tokenize.h"
#include "tbb/global_control.h"
#include "tbb/parallel_for.h"

namespace posttrain {
namespace {

using ordered_json = nlohmann::ordered_json;

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int Main(int argc, char** argv) {
  std::string data = "../shared/data", conversations_path = "recipes/data/orca_dpo_pairs_validation.jsonl";
  int repeat = 3;
  std::size_t max = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--data") data = argv[i + 1];
    if (flag == "--conversations") conversations_path = argv[i + 1];
    if (flag == "--repeat") repeat = std::stoi(argv[i + 1]);
    if (flag == "--max") max = std::stoul(argv[i + 1]);
  }
  absl::StatusOr<std::string> text = ReadTextFile(conversations_path);
  absl::StatusOr<ChatTemplate> chat = ChatTemplate::Load(data + "/qwen3_tokenizer");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(data + "/qwen3_tokenizer");
  if (!text.ok() || !chat.ok() || !tokenizer.ok()) {
    std::fprintf(stderr, "run from the repository root with ../shared/data (or pass --data, --conversations)\n");
    return 1;
  }
  std::vector<Example> examples;
  std::size_t bytes = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    ordered_json row = ordered_json::parse(line);
    ordered_json messages = row["input"]["messages"];
    for (const auto& m : row["preferred_output"]) messages.push_back(m);
    Example e;
    e.format = ExampleFormat::kLanguageModeling;
    e.conversation = ordered_json{{"messages", messages}};
    examples.push_back(std::move(e));
    if (max > 0 && examples.size() == max) break;
  }
  const auto n = static_cast<double>(examples.size());
  std::printf("%zu conversations, Qwen3 template and tokenizer, %d oneTBB workers\n", examples.size(),
              static_cast<int>(tbb::this_task_arena::max_concurrency()));
  for (int r = 0; r < repeat; ++r) {
    std::vector<Example> work = examples;
    auto start = std::chrono::steady_clock::now();
    for (Example& e : work) {
      if (!RenderConversation(*chat, e).ok()) return 1;
    }
    const double render_s = Seconds(start);
    bytes = 0;
    for (const Example& e : work) bytes += e.text.size();

    work = examples;
    TokenizeOptions options;
    options.max_length = -1;
    std::size_t tokens = 0;
    start = std::chrono::steady_clock::now();
    {
      tbb::global_control one(tbb::global_control::max_allowed_parallelism, 1);
      for (Example& e : work) (void)RenderConversation(*chat, e);
      for (const TokenizedExample& t : TokenizeExamples(work, **tokenizer, options)) tokens += t.completion_ids.size() + 1;
    }
    const double serial_s = Seconds(start);

    work = examples;
    start = std::chrono::steady_clock::now();
    tbb::parallel_for(std::size_t{0}, work.size(), [&](std::size_t i) { (void)RenderConversation(*chat, work[i]); });
    (void)TokenizeExamples(work, **tokenizer, options);
    const double parallel_s = Seconds(start);

    // assistant_only_loss: every assistant turn's prefix rendered too, and masks.
    absl::StatusOr<ChatTemplate> chatml = ChatTemplate::FromSource(
        "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' }}{% if m.role == 'assistant' %}{% generation %}"
        "{{ m.content + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}{% else %}{{ m.content + '<|im_end|>\\n' }}{% endif %}"
        "{% endfor %}");
    work = examples;
    ConversationOptions masks;
    masks.assistant_spans = true;
    options.assistant_only_loss = true;
    start = std::chrono::steady_clock::now();
    tbb::parallel_for(std::size_t{0}, work.size(), [&](std::size_t i) { (void)RenderConversation(*chatml, work[i], masks); });
    (void)TokenizeExamples(work, **tokenizer, options);
    const double masked_s = Seconds(start);

    std::printf(
        "pass %d: render %7.0f conv/s (%5.1f MB/s) | render+tokenize 1 thread %6.0f conv/s, all workers %6.0f conv/s "
        "(%.0f tokens/s) | with assistant masks %6.0f conv/s\n",
        r + 1, n / render_s, bytes / 1e6 / render_s, n / serial_s, n / parallel_s, tokens / parallel_s, n / masked_s);
  }
  return 0;
}

}  // namespace
}  // namespace posttrain

int main(int argc, char** argv) { return posttrain::Main(argc, argv); }
