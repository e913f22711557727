// Tokenizer load time and encode throughput.
//
//   build/bin/tokenizer_bench [--data ../shared/data] [--repeat 3]
//
// Qwen3's tokenizer.json (151k vocabulary, byte-level BPE, split regex): load time,
// then encode MB/s over TinyStories (2 MiB) and GSM8K questions+answers. stories'
// tok512 as tokenizer.json (this project's BPE) vs the same model through
// libsentencepiece, on TinyStories. The word cache is cold on the first pass.
#include <chrono>
#include <cstdio>
#include <string>

#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "posttrain/core/text_file.h"
#include "posttrain/tokenizer/hf_tokenizer.h"
#include "posttrain/tokenizer/tokenizer.h"

namespace posttrain {
namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void Throughput(const char* name, const Tokenizer& tokenizer, const std::vector<std::string>& lines, int repeat) {
  std::size_t bytes = 0, tokens = 0;
  for (const std::string& l : lines) bytes += l.size();
  for (int r = 0; r < repeat; ++r) {
    const auto start = std::chrono::steady_clock::now();
    tokens = 0;
    for (const std::string& l : lines) tokens += tokenizer.Encode(l).size();
    const double s = Seconds(start);
    std::printf("  %-44s pass %d: %6.2f MB in %6.3f s = %6.2f MB/s (%zu tokens)\n", name, r + 1, bytes / 1e6, s,
                bytes / 1e6 / s, tokens);
  }
}

int Main(int argc, char** argv) {
  std::string data = "../shared/data";
  int repeat = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--data") data = argv[i + 1];
    if (std::string(argv[i]) == "--repeat") repeat = std::stoi(argv[i + 1]);
  }
  auto stories = ReadTextFile(data + "/tinystories_train_head2MiB.txt");
  auto gsm8k = ReadTextFile(data + "/gsm8k_train.jsonl");
  if (!stories.ok() || !gsm8k.ok()) {
    std::fprintf(stderr, "run from the repository root or pass --data DIR\n");
    return 1;
  }
  std::vector<std::string> story_lines = absl::StrSplit(*stories, '\n');
  std::vector<std::string> gsm_texts;
  for (absl::string_view line : absl::StrSplit(*gsm8k, '\n', absl::SkipEmpty())) {
    nlohmann::json j = nlohmann::json::parse(line);
    gsm_texts.push_back(j["question"].get<std::string>() + "\n" + j["answer"].get<std::string>());
  }

  auto start = std::chrono::steady_clock::now();
  auto qwen = LoadTokenizer(data + "/qwen3_tokenizer");
  const double load_s = Seconds(start);
  if (!qwen.ok()) {
    std::fprintf(stderr, "%s\n", std::string(qwen.status().message()).c_str());
    return 1;
  }
  std::printf("Qwen3 tokenizer.json: loaded in %.3f s (vocab %lld)\n", load_s, static_cast<long long>((*qwen)->vocab_size()));
  Throughput("Qwen3 on TinyStories 2 MiB", **qwen, story_lines, repeat);
  Throughput("Qwen3 on GSM8K train (question+answer)", **qwen, gsm_texts, repeat);

  auto converted = ConvertSentencePieceToHf(data + "/tok512.model");
  auto tok512 = ParseHfTokenizer(converted->tokenizer_json, converted->tokenizer_config_json);
  auto spm = LoadSentencePieceTokenizer(data + "/tok512.model");
  if (!tok512.ok() || !spm.ok()) return 1;
  std::printf("tok512 (512 pieces):\n");
  Throughput("tokenizer.json (posttrain BPE) on TinyStories", **tok512, story_lines, repeat);
  Throughput("tok512.model (libsentencepiece) on TinyStories", **spm, story_lines, repeat);
  return 0;
}

}  // namespace
}  // namespace posttrain

int main(int argc, char** argv) { return posttrain::Main(argc, argv); }
