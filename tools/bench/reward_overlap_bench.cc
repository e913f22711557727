// Reward scoring overlapped with generation vs. done after it.
//
//   build/bin/reward_overlap_bench [--prompts 8] [--generations 8] [--new-tokens 64]
//                                  [--sleep-ms 20] [--repeat 3] [--workers 8] [--logprobs 1]
//                                  [--stop "."] [--chunk 8]
//
// One GRPO-shaped rollout step on stories260K (TinyStories openings, sampling at
// temperature 1, EOS on): prompts × generations completions, each scored by a
// reward that sleeps `sleep-ms` per completion (a stand-in for a remote judge or a
// subprocess: it waits, it does not compute). Three ways, in the same process:
//   sequential   generate everything, then score (RewardPipeline::Score: chunks of
//                8 on the pipeline's `--workers` oneTBB threads)
//   one-by-one   generate, then score each completion in turn (what a naive loop does)
//   overlapped   the engine's path: each completion goes to a RewardPipeline session
//                as soon as it is final (Generate's on_finished, as the default
//                sampler's on_rollout), scoring on the workers while generation and
//                the log-prob pass go on
// The overlapped step also runs with generation in micro-batches
// (generation_batch_size), which hands completions over earlier. --logprobs 0 skips
// the sampler's teacher-forced pass, as the engine does for the online trainers
// (they compute those log-probs in their own forward pass).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

#include "posttrain/core/text_file.h"
#include "posttrain/core/threads.h"
#include "posttrain/generation/generate.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/model/llama2c.h"
#include "posttrain/run/reward_pipeline.h"
#include "posttrain/tokenizer/hf_tokenizer.h"
#include "tbb/info.h"

namespace posttrain {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

class SleepReward final : public RewardFunction {
 public:
  explicit SleepReward(int ms) : ms_(ms) {}
  absl::StatusOr<std::vector<float>> Score(absl::Span<const RewardInput> batch) const override {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms_ * static_cast<int>(batch.size())));
    return std::vector<float>(batch.size(), 1.0f);
  }

 private:
  int ms_;
};

Rollout ToRollout(const Generation& g) {
  Rollout r;
  r.prompt_index = g.prompt_index;
  r.completion = g.text;
  r.token_ids = g.token_ids;
  r.finish_reason = g.finish_reason;
  return r;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main(int argc, char** argv) {
  std::int64_t num_prompts = 8, generations = 8, new_tokens = 64, repeat = 3;
  int sleep_ms = 20, workers = 8, logprobs = 1, chunk = 8;
  std::string data = "recipes/data", stop;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--prompts") num_prompts = std::stoll(argv[i + 1]);
    if (flag == "--generations") generations = std::stoll(argv[i + 1]);
    if (flag == "--new-tokens") new_tokens = std::stoll(argv[i + 1]);
    if (flag == "--sleep-ms") sleep_ms = std::stoi(argv[i + 1]);
    if (flag == "--repeat") repeat = std::stoll(argv[i + 1]);
    if (flag == "--workers") workers = std::stoi(argv[i + 1]);
    if (flag == "--logprobs") logprobs = std::stoi(argv[i + 1]);
    if (flag == "--stop") stop = argv[i + 1];
    if (flag == "--chunk") chunk = std::stoi(argv[i + 1]);
    if (flag == "--data") data = argv[i + 1];
  }
  ConfigureThreads(at::kFloat);
  auto stories = ReadLlama2cCheckpoint(data + "/stories260K.bin");
  auto converted = ConvertSentencePieceToHf(data + "/tok512.model");
  auto text = ReadTextFile(data + "/tinystories_head512KiB.txt");
  if (!stories.ok() || !converted.ok() || !text.ok()) {
    std::fprintf(stderr, "setup failed (run from the repository root, or pass --data DIR)\n");
    return 1;
  }
  auto tokenizer = ParseHfTokenizer(converted->tokenizer_json, converted->tokenizer_config_json);
  const CausalLM& model = **stories;
  std::vector<Example> examples;
  for (absl::string_view story : absl::StrSplit(*text, "<|endoftext|>")) {
    std::string opening(story.substr(0, std::min<size_t>(story.size(), 60)));
    if (opening.find_first_not_of(" \n") == std::string::npos) continue;
    Example e;
    e.format = ExampleFormat::kPromptOnly;
    e.prompt = opening;
    examples.push_back(std::move(e));
    if (static_cast<std::int64_t>(examples.size()) == num_prompts) break;
  }
  std::vector<const Example*> batch;
  std::vector<std::vector<std::int64_t>> prompts;
  for (const Example& e : examples) {
    batch.push_back(&e);
    prompts.push_back((*tokenizer)->Encode(e.prompt, true));
  }
  RewardPipeline rewards(static_cast<std::size_t>(chunk), workers);
  rewards.Add("sleep", 1.0, std::make_unique<SleepReward>(sleep_ms));
  SamplingParams params;
  params.max_new_tokens = new_tokens;
  params.temperature = 1.0;
  params.eos_token_ids = EosTokenIds(model, tokenizer->get());
  params.compute_logprobs = logprobs != 0;
  if (!stop.empty()) params.stop_strings = {stop};
  const auto total = static_cast<std::size_t>(num_prompts * generations);
  std::printf("%lld prompts x %lld generations x <= %lld new tokens (stories260K, fp32), reward sleeps %d ms per "
              "completion; %d reward workers (%d cores); median of %lld\n",
              static_cast<long long>(num_prompts), static_cast<long long>(generations),
              static_cast<long long>(new_tokens), sleep_ms, workers, tbb::info::default_concurrency(),
              static_cast<long long>(repeat));
  Generate(model, {prompts[0]}, 1, params, nullptr).IgnoreError();  // warm-up

  std::int64_t stopped_early = 0;
  std::vector<double> gen_s, score_s, one_s, overlap_s, overlap_micro_s, sampling_s;
  for (std::int64_t rep = 0; rep < repeat; ++rep) {
    params.seed = static_cast<std::uint64_t>(rep + 1);
    params.batch_size = 0;
    params.on_finished = nullptr;
    // Sequential: generate, then score.
    auto start = Clock::now();
    double last_final = 0;
    params.on_finished = [&](std::size_t, const Generation&) { last_final = Seconds(start); };
    auto generated = Generate(model, prompts, generations, params, tokenizer->get());
    gen_s.push_back(Seconds(start));
    sampling_s.push_back(last_final);
    params.on_finished = nullptr;
    std::vector<Rollout> rollouts;
    for (const Generation& g : *generated) {
      rollouts.push_back(ToRollout(g));
      stopped_early += g.finish_reason == FinishReason::kStop;
    }
    start = Clock::now();
    if (!rewards.Score(batch, rollouts).ok()) return 1;
    score_s.push_back(Seconds(start));
    // One by one.
    SleepReward one(sleep_ms);
    start = Clock::now();
    for (const Rollout& r : rollouts) {
      RewardInput in{batch[static_cast<size_t>(r.prompt_index)]->prompt, r.completion, &batch[0]->metadata};
      one.Score({&in, 1}).IgnoreError();
    }
    one_s.push_back(Seconds(start));
    // Overlapped, as the engine runs a step: all at once, then in micro-batches of 16.
    for (std::int64_t micro : {std::int64_t{0}, std::int64_t{16}}) {
      params.batch_size = micro;
      start = Clock::now();
      RewardPipeline::Session session = rewards.Start(batch, total);
      params.on_finished = [&](std::size_t i, const Generation& g) { session.Submit(i, ToRollout(g)); };
      auto streamed = Generate(model, prompts, generations, params, tokenizer->get());
      std::vector<Rollout> final_rollouts;
      for (const Generation& g : *streamed) final_rollouts.push_back(ToRollout(g));
      if (!session.Finish(final_rollouts).ok()) return 1;
      (micro == 0 ? overlap_s : overlap_micro_s).push_back(Seconds(start));
    }
  }
  const double g = Median(gen_s), s = Median(score_s), o = Median(one_s);
  const double ov = Median(overlap_s), ovm = Median(overlap_micro_s);
  std::printf("generation alone                         %6.2f s   (sampling %.2f s%s)\n", g, Median(sampling_s),
              logprobs ? ", then the log-prob pass" : ", no log-prob pass");
  std::printf("completions ending before the limit       %5.1f%%%s\n",
              100.0 * static_cast<double>(stopped_early) / static_cast<double>(total * repeat),
              stop.empty() ? " (EOS)" : absl::StrCat(" (EOS or \"", stop, "\")").c_str());
  std::printf("scoring alone (chunks of %d, %d workers)  %6.2f s   one by one %6.2f s\n", chunk, workers, s, o);
  std::printf("in sequence: generation + scoring        %6.2f s   (+ one by one: %6.2f s)\n", g + s, g + o);
  std::printf("overlapped step                          %6.2f s   = %.2fx of in-sequence, hides %3.0f%% of scoring\n",
              ov, ov / (g + s), 100.0 * std::clamp((g + s - ov) / s, 0.0, 1.0));
  std::printf("overlapped, generation_batch_size 16     %6.2f s   = %.2fx of in-sequence\n", ovm, ovm / (g + s));
  return 0;
}

}  // namespace
}  // namespace posttrain

int main(int argc, char** argv) { return posttrain::Main(argc, argv); }
