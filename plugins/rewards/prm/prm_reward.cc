// Reward function "prm": scores each reasoning step of a completion with a process
// reward model (a *ForTokenClassification with num_labels 2, as the `prm` trainer
// saves it) and aggregates the step scores into the completion's reward.
//
//   [[rewards]]
//   type = "prm"
//   path = "runs/prm_stories260K_gsm8k/final"
//   aggregation = "min"        # or "prod", "mean", "last"
//
// The completion is split at `step_separator` (empty steps dropped); prompt and
// steps are laid out as the trainer laid them out (train/tokenize.h: StepwiseTokens,
// the prompt with the tokenizer's template and cut to max_prompt_length from the
// left), and the score of step k is P(correct) = softmax(W h + b)[1] (the head) at the last
// token of its separator. A completion with no step scores as one empty step would
// not: it gets 0. The model is frozen; calls from several threads take turns on it.
#include <c10/core/GradMode.h>
#include <mutex>

#include "absl/strings/str_split.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/model/sequence_classifier.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/tokenizer/tokenizer.h"
#include "posttrain/train/tokenize.h"

namespace posttrain {
namespace {

class PrmReward final : public RewardFunction {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Scores each step with a process reward model (*ForTokenClassification, num_labels 2) and aggregates.")
        .Required("path", OptionType::kString, "The process reward model's directory (config.json, safetensors, tokenizer).")
        .String("step_separator", "\n", "Splits a completion into steps, and follows each step (as in training).")
        .String("aggregation", "min", "Reward from the step scores P(correct): their min, product, mean, or the last.",
                {"min", "prod", "mean", "last"})
        .String("dtype", "float32", "Weights' dtype: float32 or bfloat16.")
        .Int("max_length", 1024, "Prompt + steps tokens at most (later steps are cut).").AtLeast(1)
        .Int("max_prompt_length", 512, "Prompt tokens at most (cut from the left).").AtLeast(1)
        .Int("batch_size", 16, "Sequences per forward pass.").AtLeast(1);
  }

  static absl::StatusOr<std::unique_ptr<RewardFunction>> Create(const ComponentConfig& config) {
    auto reward = std::make_unique<PrmReward>();
    absl::StatusOr<at::ScalarType> dtype = ParseDtype(config.GetString("dtype"));
    if (!dtype.ok()) return config.Error("dtype", std::string(dtype.status().message()));
    const std::string path = config.GetString("path");
    absl::StatusOr<SequenceClassifier> model = LoadTokenClassifier(path, *dtype);
    if (!model.ok()) return config.Error("path", std::string(model.status().message()));
    if (model->head.num_labels() != 2) {
      return config.Error("path", absl::StrCat("'", path, "' has num_labels ", model->head.num_labels(),
                                               "; a process reward model has 2 (incorrect, correct)"));
    }
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(path);
    if (!tokenizer.ok()) return config.Error("path", std::string(tokenizer.status().message()));
    reward->model_ = std::move(*model);
    reward->tokenizer_ = std::move(*tokenizer);
    reward->separator_ = config.GetString("step_separator");
    reward->separator_ids_ = reward->tokenizer_->Encode(reward->separator_, /*add_special_tokens=*/false);
    if (reward->separator_.empty() || reward->separator_ids_.empty()) {
      return config.Error("step_separator", "must be non-empty text that tokenizes to at least one token");
    }
    reward->aggregation_ = config.GetString("aggregation");
    reward->max_length_ = config.GetInt("max_length");
    reward->max_prompt_length_ = config.GetInt("max_prompt_length");
    reward->batch_size_ = config.GetInt("batch_size");
    return reward;
  }

  // P(correct) of each step of each completion.
  std::vector<std::vector<float>> StepScores(absl::Span<const RewardInput> batch) const {
    std::vector<std::vector<std::int64_t>> streams;
    std::vector<std::vector<std::int64_t>> positions;  // labelled positions per sequence
    for (const RewardInput& in : batch) {
      std::vector<std::int64_t> prompt = tokenizer_->Encode(std::string(in.prompt), /*add_special_tokens=*/!in.conversational());
      if (static_cast<std::int64_t>(prompt.size()) > max_prompt_length_) {
        prompt.erase(prompt.begin(), prompt.end() - max_prompt_length_);
      }
      std::vector<std::vector<std::int64_t>> steps;
      for (absl::string_view step : absl::StrSplit(in.completion, separator_, absl::SkipWhitespace())) {
        steps.push_back(tokenizer_->Encode(std::string(step), /*add_special_tokens=*/false));
      }
      StepwiseSequence s = StepwiseTokens(prompt, steps, std::vector<bool>(steps.size(), true), separator_ids_,
                                          /*train_on_last_step_only=*/false, -1, max_length_);
      std::vector<std::int64_t> at;
      for (size_t k = 0; k < s.labels.size(); ++k) {
        if (s.labels[k] != kIgnoreLabel) at.push_back(static_cast<std::int64_t>(k));
      }
      positions.push_back(std::move(at));
      streams.push_back(std::move(s.input_ids));
    }
    std::vector<std::vector<float>> out(batch.size());
    std::lock_guard<std::mutex> lock(mutex_);
    c10::NoGradGuard no_grad;
    for (size_t start = 0; start < streams.size(); start += static_cast<size_t>(batch_size_)) {
      const size_t end = std::min(streams.size(), start + static_cast<size_t>(batch_size_));
      const std::vector<std::vector<std::int64_t>> chunk(streams.begin() + static_cast<std::ptrdiff_t>(start),
                                                         streams.begin() + static_cast<std::ptrdiff_t>(end));
      PackedSequences packed = PackSequences(chunk);
      std::vector<std::int64_t> rows;
      for (size_t i = start; i < end; ++i) {
        for (std::int64_t p : positions[i]) rows.push_back(packed.offsets[i - start] + p);
      }
      if (rows.empty()) continue;
      const at::Tensor hidden = model_.backbone->PackedHidden(packed);
      const at::Tensor probability =
          at::softmax(model_.head(hidden.index_select(0, at::tensor(rows, hidden.options().dtype(at::kLong)))).to(at::kFloat), -1)
              .select(1, 1)
              .to(at::kCPU)  // read on the host
              .contiguous();
      const float* p = probability.data_ptr<float>();
      for (size_t i = start; i < end; ++i) {
        out[i].assign(p, p + positions[i].size());
        p += positions[i].size();
      }
    }
    return out;
  }

  absl::StatusOr<std::vector<float>> Score(absl::Span<const RewardInput> batch) const override {
    std::vector<float> scores;
    for (const std::vector<float>& steps : StepScores(batch)) {
      if (steps.empty()) {
        scores.push_back(0.0f);
      } else if (aggregation_ == "min") {
        scores.push_back(*std::min_element(steps.begin(), steps.end()));
      } else if (aggregation_ == "prod") {
        scores.push_back(std::accumulate(steps.begin(), steps.end(), 1.0f, std::multiplies<float>()));
      } else if (aggregation_ == "mean") {
        scores.push_back(std::accumulate(steps.begin(), steps.end(), 0.0f) / static_cast<float>(steps.size()));
      } else {
        scores.push_back(steps.back());
      }
    }
    return scores;
  }

 private:
  SequenceClassifier model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string separator_, aggregation_;
  std::vector<std::int64_t> separator_ids_;
  std::int64_t max_length_ = 1024, max_prompt_length_ = 512, batch_size_ = 16;
  mutable std::mutex mutex_;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_REWARD_FUNCTION("prm", posttrain::PrmReward);
POSTTRAIN_PLUGIN("posttrain_reward_prm");
