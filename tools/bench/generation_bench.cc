// Generation throughput: N prompts × M new tokens, one batch vs one prompt at a time.
//
//   build/bin/generation_bench [--prompts 16] [--new-tokens 128] [--dtype float32]
//
// Models: stories260K (converted from recipes/data in-process) and a random model
// of stories15M's shape (dim 288, 6 layers, 6 heads, hidden 768, vocab 32000).
// Prompts are the openings of the first TinyStories stories. EOS is disabled so
// every sequence generates exactly M tokens. Both modes run in the same process,
// one after the other, so their ratio is meaningful on a noisy machine.
#include <chrono>
#include <cstdio>
#include <string>

#include "absl/strings/str_split.h"
#include <ATen/Parallel.h>

#include "bench_models.h"
#include "posttrain/core/text_file.h"
#include "posttrain/core/threads.h"
#include "posttrain/generation/generate.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/model/llama2c.h"
#include "posttrain/tokenizer/hf_tokenizer.h"

namespace posttrain {
namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void Run(const char* name, const CausalLM& model, const std::vector<std::vector<std::int64_t>>& prompts,
         std::int64_t new_tokens) {
  SamplingParams params;
  params.max_new_tokens = new_tokens;
  params.temperature = 1.0;
  params.seed = 1;
  // Warm-up (allocator, BLAS threads).
  Generate(model, {prompts[0]}, 1, params, nullptr).IgnoreError();

  auto start = std::chrono::steady_clock::now();
  auto batch = Generate(model, prompts, 1, params, nullptr);
  const double batch_s = Seconds(start);
  std::int64_t batch_tokens = 0;
  for (const Generation& g : *batch) batch_tokens += static_cast<std::int64_t>(g.token_ids.size());

  start = std::chrono::steady_clock::now();
  std::int64_t single_tokens = 0;
  for (const auto& p : prompts) {
    auto one = Generate(model, {p}, 1, params, nullptr);
    single_tokens += static_cast<std::int64_t>((*one)[0].token_ids.size());
  }
  const double single_s = Seconds(start);
  std::printf("%-28s %-9s batch %6lld tok in %7.2f s = %8.1f tok/s | one-by-one %6lld tok in %7.2f s = %8.1f tok/s | speed-up %.1fx\n",
              name, DtypeName(model.dtype()).c_str(), static_cast<long long>(batch_tokens), batch_s,
              batch_tokens / batch_s, static_cast<long long>(single_tokens), single_s, single_tokens / single_s,
              (batch_tokens / batch_s) / (single_tokens / single_s));
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  std::int64_t num_prompts = 16, new_tokens = 128;
  std::string dtype_name = "float32", data = "recipes/data";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--prompts") num_prompts = std::stoll(argv[i + 1]);
    if (flag == "--new-tokens") new_tokens = std::stoll(argv[i + 1]);
    if (flag == "--dtype") dtype_name = argv[i + 1];
    if (flag == "--data") data = argv[i + 1];
  }
  auto dtype = ParseDtype(dtype_name);
  if (dtype.ok()) ConfigureThreads(*dtype);
  auto stories = ReadLlama2cCheckpoint(data + "/stories260K.bin");
  auto converted = ConvertSentencePieceToHf(data + "/tok512.model");
  auto text = ReadTextFile(data + "/tinystories_head512KiB.txt");
  if (!dtype.ok() || !stories.ok() || !converted.ok() || !text.ok()) {
    std::fprintf(stderr, "setup failed (run from the repository root, or pass --data DIR)\n");
    return 1;
  }
  auto tokenizer = ParseHfTokenizer(converted->tokenizer_json, converted->tokenizer_config_json);
  std::vector<std::vector<std::int64_t>> prompts;
  for (absl::string_view story : absl::StrSplit(*text, "<|endoftext|>")) {
    std::string opening(story.substr(0, std::min<size_t>(story.size(), 60)));
    if (opening.find_first_not_of(" \n") == std::string::npos) continue;
    prompts.push_back((*tokenizer)->Encode(opening, true));
    if (static_cast<std::int64_t>(prompts.size()) == num_prompts) break;
  }
  std::printf("%lld prompts (%zu..%zu tokens) x %lld new tokens, %d threads\n", static_cast<long long>(prompts.size()),
              prompts.front().size(), prompts.back().size(), static_cast<long long>(new_tokens), at::get_num_threads());
  auto stories_model = CausalLM::FromTensors((*stories)->config(),
                                             std::map<std::string, at::Tensor>((*stories)->named_parameters().begin(),
                                                                               (*stories)->named_parameters().end()),
                                             *dtype);
  Run("stories260K", **stories_model, prompts, new_tokens);

  const ModelConfig c = bench::Stories15MShape();
  auto random15m = CausalLM::Random(c, *dtype, 7);
  Run("random stories15M-shape", **random15m, prompts, new_tokens);
  return 0;
}

}  // namespace
}  // namespace posttrain

int main(int argc, char** argv) { return posttrain::Main(argc, argv); }
