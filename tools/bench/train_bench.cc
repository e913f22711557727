// Training throughput and memory: SFT and DPO steps on a stories15M-shaped random
// model (dim 288, 6 layers, 6 heads, hidden 768, vocab 32000) with variable-length
// synthetic data, through the real trainer plugins and the engine's AdamW.
//
//   build/bin/train_bench [--mode sft|sft_packed|dpo|dpo_precompute] [--steps 6] [--batch 8]
//                         [--bf16 0|1] [--vocab 32000] [--shape stories15M|stories260K]
//                         [--profile trace.json]
//
// --vocab changes only the vocabulary (151936: Qwen3's), as ref_torch.py --vocab does.
//
// Each configuration runs in a fresh child process (peak RSS is per process):
//   sft            one row per sequence, padded to the longest in the batch
//   sft_packed     packing = true: the data packed into rows of 512 tokens (bfd), as
//                  the engine does; a batch is `--batch` packed rows
//   dpo            reference log-probs computed every step
//   dpo_precompute precompute_ref_log_probs = true (computed once, up front)
//   grpo           (--mode grpo only) ref_torch.py's GRPO step: 2 prompts of 16-48
//                  random tokens x 8 samples x 64 new tokens (temperature 1, no
//                  EOS), reward = how many sampled tokens are 0 mod 7, the grpo
//                  trainer (beta 0, one iteration), AdamW; generation included
// Reported: real (non-padding) tokens per second over the timed steps (the first
// step is a warm-up), and the child's peak resident memory.
// --profile (with --mode; grpo: the trainer's step only) records libtorch's operators over the timed steps
// into a Chrome trace (the profiler slows the steps); tools/bench/trace_top.py sums
// it by operator, self time first.
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <cstdio>
#include <random>
#include <string>

#include "bench_models.h"
#include "posttrain/core/autocast.h"
#include "posttrain/core/threads.h"
#include "posttrain/generation/generate.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/plugin/plugin_host.h"
#include "posttrain/train/adamw.h"
#include "posttrain/train/tokenize.h"
#include "torch/csrc/autograd/profiler_legacy.h"

extern char** environ;

namespace posttrain {
namespace {

// Variable-length examples: prompt 16–128 tokens, completions 16–256.
std::vector<TokenizedExample> Data(std::int64_t n, bool preference, std::uint64_t seed, std::int64_t vocab) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> token(3, vocab - 1), prompt_len(16, 128), completion_len(16, 256);
  auto ids = [&](std::int64_t len) {
    std::vector<std::int64_t> v;
    for (std::int64_t i = 0; i < len; ++i) v.push_back(token(rng));
    return v;
  };
  std::vector<TokenizedExample> out(static_cast<size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    TokenizedExample& t = out[static_cast<size_t>(i)];
    t.index = i;
    t.prompt_ids = ids(prompt_len(rng));
    if (preference) {
      t.chosen_ids = ids(completion_len(rng));
      t.rejected_ids = ids(completion_len(rng));
    } else {
      t.completion_ids = ids(completion_len(rng));
    }
  }
  return out;
}

// bf16 autocast on or off (as the engine's Autocast scope does).
void Autocast(bool on) {
  if (posttrain::AutocastEnabled(at::kCPU) && !on) at::autocast::clear_cache();
  posttrain::SetAutocast(at::kCPU, on, at::kBFloat16);
}

std::int64_t RealTokens(const TokenizedExample& t) {
  if (!t.packed.empty()) {
    std::int64_t n = 0;
    for (const TokenizedExample& m : t.packed) n += RealTokens(m);
    return n;
  }
  return static_cast<std::int64_t>(t.prompt_ids.size() + t.completion_ids.size() + t.chosen_ids.size() +
                                   t.rejected_ids.size() + (t.chosen_ids.empty() ? 0 : t.prompt_ids.size()));
}

// The model's parameters, set to take gradients, by name (what AdamW takes).
std::vector<std::pair<std::string, at::Tensor>> Trainable(const CausalLM& model) {
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (const auto& [name, p] : model.named_parameters()) {
    p.set_requires_grad(true);
    params.push_back({name, p});
  }
  return params;
}

// One optimisation step as the engine takes it: the trainer's loss (under bf16
// autocast if asked), backward, clipping at 1, AdamW.
bool TrainStep(Trainer& trainer, const StepInput& input, AdamW& optimizer, bool bf16) {
  {
    Autocast(bf16);
    auto out = trainer.Step(input);
    if (out.ok()) out->loss.backward();
    Autocast(false);
    if (!out.ok()) return false;
  }
  optimizer.ClipGradNorm(1.0);
  optimizer.Step(1e-5);
  optimizer.ZeroGrad();
  return true;
}

// The line other tools read: "... tokens/s ... peak RSS N MiB".
void PrintResult(const std::string& mode, bool bf16, std::int64_t steps, std::int64_t examples, double tokens,
                 double seconds, const std::string& suffix) {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("%-15s %-5s %5lld steps x %2lld examples: %8.0f tokens/s  %6.2f s/step  peak RSS %6.0f MiB%s\n",
              mode.c_str(), bf16 ? "bf16" : "fp32", static_cast<long long>(steps), static_cast<long long>(examples),
              tokens / seconds, seconds / steps, usage.ru_maxrss / 1024.0, suffix.c_str());
  std::fflush(stdout);
}

// ref_torch.py --workload grpo, through Generate and the grpo trainer plugin.
ModelConfig Shape(const std::string& name, std::int64_t vocab) {
  ModelConfig c = name == "stories260K" ? bench::Stories260KShape() : bench::Stories15MShape();
  if (vocab > 0) c.vocab_size = vocab;
  return c;
}

int RunGrpo(std::int64_t steps, bool bf16, const ModelConfig& shape, const std::string& profile) {
  const std::int64_t vocab = shape.vocab_size;
  ConfigureThreads(bf16 ? at::kBFloat16 : at::kFloat);
  PluginHost host;
  if (!host.LoadDefaultDirectories().ok()) return 2;
  const RegisteredComponent* c = host.registry().Find(ComponentKind::kTrainer, "grpo");
  constexpr std::int64_t kGenerations = 8, kNewTokens = 64;
  std::map<std::string, OptionValue> values = {{"num_generations", OptionValue(kGenerations)},
                                               {"beta", OptionValue(0.0)}};
  ComponentConfig config("grpo", &c->registration.schema, values, "bench");
  auto trainer = host.registry().Create<Trainer>(config);
  if (!trainer.ok()) return 3;
  auto model = CausalLM::Random(shape, at::kFloat, 1);
  AdamW optimizer(Trainable(**model), {});
  if (!(*trainer)->Setup(TrainerContext{model->get(), nullptr, nullptr}).ok()) return 3;
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<std::int64_t> token(0, vocab - 1), prompt_len(16, 48);
  SamplingParams sampling;
  sampling.max_new_tokens = kNewTokens;
  sampling.temperature = 1.0;
  sampling.compute_logprobs = false;  // one iteration: the trainer's own pass is the old policy
  std::int64_t tokens = 0;
  double seconds = 0, generation_seconds = 0;
  for (std::int64_t step = 0; step <= steps; ++step) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::vector<std::int64_t>> prompts(2);
    for (auto& p : prompts) {
      for (std::int64_t i = prompt_len(rng); i > 0; --i) p.push_back(token(rng));
    }
    sampling.seed = static_cast<std::uint64_t>(step) + 1;
    Autocast(bf16);
    auto generated = Generate(**model, prompts, kGenerations, sampling, nullptr);
    if (!generated.ok()) return 5;
    const double generating = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::vector<Rollout> rollouts;
    RewardTable table;
    std::int64_t step_tokens = 0;
    for (const Generation& g : *generated) {
      Rollout r;
      r.prompt_index = g.prompt_index;
      r.prompt_ids = prompts[static_cast<size_t>(g.prompt_index)];
      r.token_ids = g.token_ids;
      float reward = 0;
      for (std::int64_t t : g.token_ids) reward += t % 7 == 0 ? 1.0f : 0.0f;
      table.total.push_back(reward);
      step_tokens += static_cast<std::int64_t>(r.prompt_ids.size() + r.token_ids.size());
      rollouts.push_back(std::move(r));
    }
    std::vector<Example> examples(2);
    std::vector<const Example*> example_ptrs = {&examples[0], &examples[1]};
    std::vector<absl::Span<const Rollout>> generation = {rollouts};
    StepInput input;
    input.step = step + 1;
    input.batch = example_ptrs;
    input.rollouts = rollouts;
    input.generation = generation;
    input.rewards = StepRewards(&table);
    Autocast(false);  // generation ran under it; TrainStep sets it again for the step
    // --profile: the trainer's step of the first timed step (generation's fused decode
    // step is one loop, not libtorch operators).
    std::unique_ptr<torch::autograd::profiler::RecordProfile> recording;
    if (step == 1 && !profile.empty()) recording = std::make_unique<torch::autograd::profiler::RecordProfile>(profile);
    if (!TrainStep(**trainer, input, optimizer, bf16)) return 5;
    recording.reset();  // writes the trace
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (step == 0) continue;  // warm-up
    seconds += s;
    generation_seconds += generating;
    tokens += step_tokens;
  }
  char split[64];
  std::snprintf(split, sizeof split, " (generation %.2f s/step)", generation_seconds / static_cast<double>(steps));
  PrintResult("grpo", bf16, steps, 2 * kGenerations, static_cast<double>(tokens), seconds, split);
  return 0;
}

int RunMode(const std::string& mode, std::int64_t steps, std::int64_t batch, bool bf16, const ModelConfig& shape,
            const std::string& profile) {
  const std::int64_t vocab = shape.vocab_size;
  if (mode == "grpo") return RunGrpo(steps, bf16, shape, profile);
  ConfigureThreads(bf16 ? at::kBFloat16 : at::kFloat);
  PluginHost host;
  if (!host.LoadDefaultDirectories().ok()) return 2;
  const bool dpo = mode.rfind("dpo", 0) == 0;
  const std::string type = dpo ? "dpo" : "sft";
  const RegisteredComponent* c = host.registry().Find(ComponentKind::kTrainer, type);
  std::map<std::string, OptionValue> values = {{"max_length", OptionValue(std::int64_t{512})}};
  if (mode == "sft_packed") values["packing"] = OptionValue(true);
  if (mode == "dpo_precompute") values["precompute_ref_log_probs"] = OptionValue(true);
  ComponentConfig config(type, &c->registration.schema, values, "bench");
  auto trainer = host.registry().Create<Trainer>(config);
  auto model = CausalLM::Random(shape, at::kFloat, 1);
  std::unique_ptr<CausalLM> reference = dpo ? (*model)->Clone() : nullptr;
  AdamW optimizer(Trainable(**model), {});
  std::vector<TokenizedExample> data = Data(batch * (steps + 1), dpo, 7, vocab);
  if (mode == "sft_packed") {
    // As the engine packs a packing trainer's dataset (enough sequences for every batch).
    std::vector<std::int64_t> first;
    data = PackExamples(Data(4 * batch * (steps + 1), false, 7, vocab), 512, &first);
    if (static_cast<std::int64_t>(data.size()) < batch * (steps + 1)) return 4;
  }
  if (!(*trainer)->Setup(TrainerContext{model->get(), reference.get(), nullptr}).ok()) return 3;
  const auto prepare_start = std::chrono::steady_clock::now();
  if (!(*trainer)->Prepare(data, {}).ok()) return 4;
  if ((*trainer)->ReleasesReference()) reference.reset();  // as the engine does
  const double prepare_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - prepare_start).count();
  std::int64_t tokens = 0;
  double seconds = 0;
  std::unique_ptr<torch::autograd::profiler::RecordProfile> recording;
  for (std::int64_t step = 0; step <= steps; ++step) {
    if (step == 1 && !profile.empty()) recording = std::make_unique<torch::autograd::profiler::RecordProfile>(profile);
    std::vector<const Example*> examples;
    std::vector<const TokenizedExample*> batch_tokens;
    Example dummy;
    for (std::int64_t i = 0; i < batch; ++i) {
      batch_tokens.push_back(&data[static_cast<size_t>(step * batch + i)]);
      examples.push_back(&dummy);
    }
    StepInput input;
    input.step = step + 1;
    input.batch = examples;
    input.tokens = batch_tokens;
    const auto start = std::chrono::steady_clock::now();
    if (!TrainStep(**trainer, input, optimizer, bf16)) return 5;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (step == 0) continue;  // warm-up
    seconds += s;
    for (const TokenizedExample* t : batch_tokens) tokens += RealTokens(*t);
  }
  recording.reset();  // writes the trace
  PrintResult(mode, bf16, steps, batch, static_cast<double>(tokens), seconds,
              mode == "dpo_precompute" ? " (precompute " + std::to_string(prepare_s).substr(0, 5) + " s)" : "");
  return 0;
}

}  // namespace
}  // namespace posttrain

int main(int argc, char** argv) {
  std::string mode, steps = "6", batch = "8", bf16 = "0", vocab = "0", shape = "stories15M", profile;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--mode") mode = argv[i + 1];
    if (flag == "--steps") steps = argv[i + 1];
    if (flag == "--batch") batch = argv[i + 1];
    if (flag == "--bf16") bf16 = argv[i + 1];
    if (flag == "--vocab") vocab = argv[i + 1];
    if (flag == "--shape") shape = argv[i + 1];
    if (flag == "--profile") profile = argv[i + 1];
  }
  if (std::stoll(vocab) != 0 && std::stoll(vocab) < 4) {
    std::fprintf(stderr, "--vocab must be at least 4\n");
    return 2;
  }
  if (shape != "stories15M" && shape != "stories260K") {
    std::fprintf(stderr, "--shape must be stories15M or stories260K\n");
    return 2;
  }
  const posttrain::ModelConfig model_shape = posttrain::Shape(shape, std::stoll(vocab));
  if (!profile.empty() && mode.empty()) {
    std::fprintf(stderr, "--profile needs --mode\n");
    return 2;
  }
  if (!mode.empty()) {
    return posttrain::RunMode(mode, std::stoll(steps), std::stoll(batch), bf16 == "1", model_shape, profile);
  }
  std::printf("%s-shaped random model (vocab %lld), variable-length data (prompts 16-128, completions 16-256 tokens)\n",
              shape.c_str(), static_cast<long long>(model_shape.vocab_size));
  std::fflush(stdout);
  for (const char* m : {"sft", "sft_packed", "dpo", "dpo_precompute"}) {
    std::vector<std::string> args = {"/proc/self/exe", "--mode", m,    "--steps", steps,
                                     "--batch",        batch,    "--bf16", bf16, "--vocab", vocab, "--shape", shape};
    std::vector<char*> argv_child;
    for (auto& a : args) argv_child.push_back(a.data());
    argv_child.push_back(nullptr);
    pid_t pid = 0;
    if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv_child.data(), environ) != 0) return 1;
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) std::printf("%s: failed (status %d)\n", m, status);
  }
  return 0;
}
