// Generation throughput: M new tokens at batch 1 (one prompt at a time), at batch N
// (N prompts), and at batch 4N (N prompts x 4 samples sharing each prompt's prefill).
//
//   build/bin/generation_bench [--prompts 16] [--new-tokens 128] [--dtype float32] [--bf16 0|1] [--lora R]
//
// --bf16 1 generates under bf16 autocast, as a run with bf16 = true does. --lora R
// also runs the stories15M-shape model with a LoRA adapter of rank R on every linear
// layer (random B, so that it adds something), as a GRPO run with [peft] samples.
//
// Models: stories260K (converted from recipes/data in-process) and a random model
// of stories15M's shape (dim 288, 6 layers, 6 heads, hidden 768, vocab 32000).
// Prompts are the openings of the first TinyStories stories. EOS is disabled so
// every sequence generates exactly M tokens; no log-probs are computed (decoding
// only). All modes run in the same process, one after the other, so their ratios
// are meaningful on a noisy machine.
#include <chrono>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include <ATen/Parallel.h>

#include "bench_models.h"
#include "posttrain/api/adapter.h"
#include "posttrain/core/autocast.h"
#include "posttrain/core/text_file.h"
#include "posttrain/core/threads.h"
#include "posttrain/generation/generate.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/model/llama2c.h"
#include "posttrain/plugin/plugin_host.h"
#include "posttrain/tokenizer/hf_tokenizer.h"

namespace posttrain {
namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Tokens per second of one Generate call over `prompts` x `generations` sequences.
double TokensPerSecond(const CausalLM& model, const std::vector<std::vector<std::int64_t>>& prompts,
                       std::int64_t generations, const SamplingParams& params) {
  const auto start = std::chrono::steady_clock::now();
  auto out = Generate(model, prompts, generations, params, nullptr);
  const double s = Seconds(start);
  std::int64_t tokens = 0;
  for (const Generation& g : *out) tokens += static_cast<std::int64_t>(g.token_ids.size());
  return tokens / s;
}

void Run(const char* name, const CausalLM& model, const std::vector<std::vector<std::int64_t>>& prompts,
         std::int64_t new_tokens) {
  SamplingParams params;
  params.max_new_tokens = new_tokens;
  params.temperature = 1.0;
  params.seed = 1;
  params.compute_logprobs = false;  // decoding only, as llama2.c's run.c measures it
  // Warm-up (allocator, BLAS threads).
  Generate(model, {prompts[0]}, 1, params, nullptr).IgnoreError();

  // Batch 1: the first four prompts one at a time, averaged.
  double single = 0;
  const size_t singles = std::min<size_t>(4, prompts.size());
  for (size_t i = 0; i < singles; ++i) single += TokensPerSecond(model, {prompts[i]}, 1, params) / singles;
  const double batch = TokensPerSecond(model, prompts, 1, params);
  // Batch 4x: every prompt with 4 samples (GRPO's num_generations: one prefill each).
  const double grouped = TokensPerSecond(model, prompts, 4, params);
  std::printf("%-24s %-8s batch 1: %7.1f tok/s | batch %zu: %7.1f tok/s | batch %zu (%zu prompts x 4): %7.1f tok/s\n",
              name, DtypeName(model.dtype()).c_str(), single, prompts.size(), batch, 4 * prompts.size(),
              prompts.size(), grouped);
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  std::int64_t num_prompts = 16, new_tokens = 128;
  std::string dtype_name = "float32", data = "recipes/data";
  bool bf16 = false;
  std::int64_t lora_r = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--prompts") num_prompts = std::stoll(argv[i + 1]);
    if (flag == "--new-tokens") new_tokens = std::stoll(argv[i + 1]);
    if (flag == "--dtype") dtype_name = argv[i + 1];
    if (flag == "--data") data = argv[i + 1];
    if (flag == "--bf16") bf16 = std::string(argv[i + 1]) == "1";
    if (flag == "--lora") lora_r = std::stoll(argv[i + 1]);
  }
  auto dtype = ParseDtype(dtype_name);
  if (dtype.ok()) ConfigureThreads(bf16 ? at::kBFloat16 : *dtype, ThreadUse::kGeneration);
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
  std::printf("%lld prompts (%zu..%zu tokens) x %lld new tokens, %d threads%s\n", static_cast<long long>(prompts.size()),
              prompts.front().size(), prompts.back().size(), static_cast<long long>(new_tokens), at::get_num_threads(),
              bf16 ? ", bf16 autocast" : "");
  if (bf16) SetAutocast(at::kCPU, true, at::kBFloat16);
  auto stories_model = CausalLM::FromTensors((*stories)->config(),
                                             std::map<std::string, at::Tensor>((*stories)->named_parameters().begin(),
                                                                               (*stories)->named_parameters().end()),
                                             *dtype);
  Run("stories260K", **stories_model, prompts, new_tokens);

  const ModelConfig c = bench::Stories15MShape();
  auto random15m = CausalLM::Random(c, *dtype, 7);
  Run("random stories15M-shape", **random15m, prompts, new_tokens);
  if (lora_r > 0) {
    PluginHost host;
    const RegisteredComponent* lora_plugin =
        host.LoadDefaultDirectories().ok() ? host.registry().Find(ComponentKind::kAdapter, "lora") : nullptr;
    if (lora_plugin == nullptr) {
      std::fprintf(stderr, "--lora: the lora adapter plugin was not found\n");
      return 1;
    }
    auto lora = host.registry().Create<Adapter>(ComponentConfig(
        "lora", &lora_plugin->registration.schema,
        {{"r", lora_r}, {"lora_alpha", static_cast<double>(2 * lora_r)},
         {"target_modules", std::vector<std::string>{"all-linear"}}},
        "bench"));
    if (!lora.ok() || !(*lora)->Attach(c, at::TensorOptions().dtype(at::kFloat), 0).ok() ||
        !(*lora)->Initialize(**random15m).ok()) {
      std::fprintf(stderr, "--lora: could not attach the adapter\n");
      return 1;
    }
    {
      c10::NoGradGuard no_grad;
      for (auto& [name, p] : (*lora)->NamedParameters()) {
        if (name.find("lora_B") != std::string::npos) p.normal_(0.0, 0.02);
      }
    }
    (*random15m)->set_adapter(lora->get());
    Run(absl::StrCat("+ LoRA r=", lora_r, " all-linear").c_str(), **random15m, prompts, new_tokens);
    (*random15m)->set_adapter(nullptr);
  }
  return 0;
}

}  // namespace
}  // namespace posttrain

int main(int argc, char** argv) { return posttrain::Main(argc, argv); }
