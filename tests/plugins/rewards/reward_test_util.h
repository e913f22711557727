// Scoring helper shared by the reward plugin tests.
#pragma once

#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "posttrain/api/reward_function.h"

namespace posttrain::testing {

// (prompt, completion, metadata) rows → the reward's scores.
inline absl::StatusOr<std::vector<float>> ScoreRows(const RewardFunction& reward, const std::string& prompt,
                                                   const std::vector<std::string>& completions,
                                                   const std::vector<nlohmann::json>& metadata) {
  std::vector<RewardInput> inputs;
  for (size_t i = 0; i < completions.size(); ++i) {
    inputs.push_back({prompt, completions[i], &metadata[metadata.size() == 1 ? 0 : i]});
  }
  return reward.Score(inputs);
}

}  // namespace posttrain::testing
