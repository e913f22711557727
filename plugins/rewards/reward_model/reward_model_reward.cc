// Reward function "reward_model": scores with a model trained by the `reward`
// trainer (a LlamaForSequenceClassification directory: its run's final/ or a
// checkpoint-N/), or any Hugging Face sequence classifier of a supported backbone
// with num_labels = 1.
//
//   [[rewards]]
//   type = "reward_model"
//   path = "runs/reward_stories260K_hh_harmless/final"
//
// Each (prompt, completion) is tokenized with the reward model's own tokenizer the
// way the reward trainer tokenized its pairs (prompt with the tokenizer's template,
// completion + EOS, cut to max_length keeping the prompt's end), and scored as
// score · h_last (posttrain/model/sequence_classifier.h). The model is frozen; calls
// from several threads take turns on it.
#include <c10/core/GradMode.h>
#include <mutex>

#include "posttrain/model/sequence_classifier.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/tokenizer/tokenizer.h"
#include "posttrain/train/tokenize.h"

namespace posttrain {
namespace {

class RewardModelReward final : public RewardFunction {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Scores completions with a reward model (a *ForSequenceClassification directory with num_labels 1).")
        .Required("path", OptionType::kString, "The reward model's directory (config.json, safetensors, tokenizer).")
        .String("dtype", "float32", "Weights' dtype: float32 or bfloat16.")
        .Int("max_length", 1024, "Prompt + completion tokens at most (the prompt is cut from the left).").AtLeast(1)
        .Int("max_prompt_length", 512, "Prompt tokens at most.").AtLeast(1)
        .Int("batch_size", 16, "Sequences per forward pass.").AtLeast(1);
  }

  static absl::StatusOr<std::unique_ptr<RewardFunction>> Create(const ComponentConfig& config) {
    auto reward = std::make_unique<RewardModelReward>();
    absl::StatusOr<at::ScalarType> dtype = ParseDtype(config.GetString("dtype"));
    if (!dtype.ok()) return config.Error("dtype", std::string(dtype.status().message()));
    const std::string path = config.GetString("path");
    absl::StatusOr<SequenceClassifier> model = LoadSequenceClassifier(path, *dtype);
    if (!model.ok()) return config.Error("path", std::string(model.status().message()));
    if (model->head.num_labels() != 1) {
      return config.Error("path", absl::StrCat("'", path, "' has num_labels ", model->head.num_labels(), "; a reward model has 1"));
    }
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(path);
    if (!tokenizer.ok()) return config.Error("path", std::string(tokenizer.status().message()));
    reward->model_ = std::move(*model);
    reward->tokenizer_ = std::move(*tokenizer);
    reward->tokenize_ = TokenizeOptions{config.GetInt("max_length"), config.GetInt("max_prompt_length"), "keep_end"};
    reward->batch_size_ = std::max<std::int64_t>(1, config.GetInt("batch_size"));
    return reward;
  }

  absl::StatusOr<std::vector<float>> Score(absl::Span<const RewardInput> batch) const override {
    std::vector<Example> examples(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      examples[i].format = ExampleFormat::kPromptCompletion;
      examples[i].prompt = std::string(batch[i].prompt);
      examples[i].completion = std::string(batch[i].completion);
    }
    const std::vector<TokenizedExample> tokens = TokenizeExamples(examples, *tokenizer_, tokenize_);
    std::vector<float> scores;
    scores.reserve(batch.size());
    std::lock_guard<std::mutex> lock(mutex_);
    c10::NoGradGuard no_grad;
    for (size_t start = 0; start < tokens.size(); start += static_cast<size_t>(batch_size_)) {
      const size_t end = std::min(tokens.size(), start + static_cast<size_t>(batch_size_));
      std::vector<std::vector<std::int64_t>> prompts, completions;
      for (size_t i = start; i < end; ++i) {
        prompts.push_back(tokens[i].prompt_ids);
        completions.push_back(tokens[i].completion_ids);
      }
      at::Tensor r = SequenceScores(*model_.backbone, model_.head, MakeCompletionBatch(prompts, completions, model_.backbone->device()));
      for (std::int64_t i = 0; i < r.size(0); ++i) scores.push_back(r[i][0].item<float>());
    }
    return scores;
  }

 private:
  SequenceClassifier model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  TokenizeOptions tokenize_;
  std::int64_t batch_size_ = 16;
  mutable std::mutex mutex_;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_REWARD_FUNCTION("reward_model", posttrain::RewardModelReward);
POSTTRAIN_PLUGIN("posttrain_reward_reward_model");
