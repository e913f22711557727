// Sequence classifiers (transformers' LlamaForSequenceClassification and kin): a
// causal-LM backbone and a linear head `score.weight` [num_labels, hidden] read at
// the last real token of each sequence. The `reward` trainer trains one (num_labels
// 1: a Bradley–Terry reward model); the `reward_model` reward function scores with it.
//
//   POSTTRAIN_ASSIGN_OR_RETURN(SequenceClassifier rm, LoadSequenceClassifier(dir, at::kFloat));
//   at::Tensor r = SequenceScores(*rm.backbone, rm.score, batch).squeeze(-1);  // [N]
#pragma once

#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "posttrain/model/completion_batch.h"
#include "posttrain/model/causal_lm.h"

namespace posttrain {

struct SequenceClassifier {
  std::unique_ptr<CausalLM> backbone;  // its LM head is unused
  at::Tensor score;                    // [num_labels, hidden_size], the backbone's dtype
};

// Loads a directory whose config.json declares *ForSequenceClassification and whose
// safetensors hold "score.weight". NotFound / InvalidArgument naming the directory
// and what is missing or mis-shaped.
absl::StatusOr<SequenceClassifier> LoadSequenceClassifier(const std::string& dir, at::ScalarType dtype);

// The same for token classifiers (*ForTokenClassification: the head reads every
// token's final hidden state; the `prm` trainer trains one with num_labels 2).
absl::StatusOr<SequenceClassifier> LoadTokenClassifier(const std::string& dir, at::ScalarType dtype);

// Scores [N, num_labels] fp32 of prompt + completion rows: score · h_last, with
// h_last the backbone's final (normed) hidden state at each row's last real token.
// Differentiable w.r.t. the backbone and `score` when they require grad.
at::Tensor SequenceScores(const CausalLM& backbone, const at::Tensor& score, const CompletionBatch& batch);

}  // namespace posttrain
