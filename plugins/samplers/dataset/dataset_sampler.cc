// Sampler "dataset": replays completions stored in the data as rollouts.
//
// It generates nothing: each prompt's rollout is the example's own completion (or
// its chosen / rejected answer), with finish reason "source" and no token log-probs.
// Use it to score a fixed set of completions with reward functions (trainer
// "reward_eval"), e.g. to check a reward-function library on gold answers. The
// generating sampler arrives with the model (sampler "default").
//
//   [sampler]
//   type = "dataset"
//   field = "completion"      # or "chosen", "rejected", "metadata:<key>"
#include "absl/strings/match.h"
#include "posttrain/plugin/plugin.h"

namespace posttrain {
namespace {

class DatasetSampler final : public Sampler {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema(
               "Replays completions stored in the data (no generation): the example's "
               "completion, chosen or rejected text, or a metadata field.")
        .String("field", "completion",
                "Where the completion comes from: completion, chosen, rejected, or "
                "metadata:<key> for another field of the record.");
  }

  static absl::StatusOr<std::unique_ptr<Sampler>> Create(const ComponentConfig& config) {
    auto sampler = std::make_unique<DatasetSampler>();
    sampler->field_ = config.GetString("field");
    const std::string& f = sampler->field_;
    if (f != "completion" && f != "chosen" && f != "rejected" &&
        !(absl::StartsWith(f, "metadata:") && f.size() > 9)) {
      return config.Error("field", absl::StrCat("'", f,
                                                "' is not one of completion, chosen, rejected, "
                                                "metadata:<key>"));
    }
    return sampler;
  }

  absl::StatusOr<std::vector<Rollout>> Sample(const SampleRequest& request) override {
    std::vector<Rollout> rollouts;
    rollouts.reserve(request.prompts.size() * static_cast<size_t>(request.num_generations));
    for (size_t p = 0; p < request.prompts.size(); ++p) {
      POSTTRAIN_ASSIGN_OR_RETURN(std::string completion, Completion(*request.prompts[p]));
      for (std::int64_t g = 0; g < request.num_generations; ++g) {
        Rollout rollout;
        rollout.prompt_index = static_cast<std::int64_t>(p);
        rollout.completion = completion;
        rollout.finish_reason = FinishReason::kSource;
        rollouts.push_back(std::move(rollout));
      }
    }
    return rollouts;
  }

 private:
  absl::StatusOr<std::string> Completion(const Example& example) const {
    if (field_ == "completion") return example.completion;
    if (field_ == "chosen") return example.chosen;
    if (field_ == "rejected") return example.rejected;
    const std::string key = field_.substr(9);
    auto it = example.metadata.find(key);
    if (it == example.metadata.end() || !it->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          ExampleLocation(example), ": sampler 'dataset' wants a string field \"", key, "\""));
    }
    return it->get<std::string>();
  }

  std::string field_;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_SAMPLER("dataset", posttrain::DatasetSampler);
POSTTRAIN_PLUGIN("posttrain_sampler_dataset");
