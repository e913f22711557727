// Trainer "reward_eval": scores the sampler's rollouts with the recipe's reward
// functions and logs TRL's reward metrics. It trains nothing; it is the loop of an
// online trainer without the update, for checking reward functions and data before
// a long run.
//
// Metrics (TRL GRPO names): reward, reward_std (over the batch's rollouts),
// rewards/<name>/mean, rewards/<name>/std.
#include <cmath>

#include "posttrain/plugin/plugin.h"
#include "posttrain/run/reward_pipeline.h"

namespace posttrain {
namespace {

class RewardEvalTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema(
               "Scores rollouts with the reward functions and logs reward metrics; "
               "updates no weights.")
        .Int("num_generations", 1, "Rollouts per prompt.").AtLeast(1);
  }

  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto trainer = std::make_unique<RewardEvalTrainer>();
    trainer->num_generations_ = config.GetInt("num_generations");
    if (trainer->num_generations_ < 1) return config.Error("num_generations", "must be >= 1");
    return trainer;
  }

  TrainerNeeds Needs() const override {
    TrainerNeeds needs;
    needs.model = false;  // scores whatever the sampler returns
    needs.rollouts = true;
    needs.rewards = true;
    needs.num_generations = num_generations_;
    return needs;
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    POSTTRAIN_ASSIGN_OR_RETURN(const RewardTable* rewards, input.rewards.Wait());
    StepOutput output;
    AddRewardMetrics(*rewards, &output.metrics);
    return output;
  }

 private:
  std::int64_t num_generations_ = 1;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("reward_eval", posttrain::RewardEvalTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_reward_eval");
