// Classifiers (transformers' LlamaForSequenceClassification, GPT2ForTokenClassification
// and kin): a causal-LM backbone and a linear head over its final (normed) hidden
// states. The `reward` trainer trains a sequence classifier (num_labels 1: a
// Bradley–Terry reward model) that the `reward_model` reward function scores with;
// the `prm` trainer trains a token classifier (num_labels 2) that the `prm` reward
// function scores with.
//
// The head is what transformers names and shapes it:
//   *ForSequenceClassification  `score`       [num_labels, H], no bias
//   *ForTokenClassification     `score`       [num_labels, H] + bias [num_labels]
//                               (GenericForTokenClassification: the Llama families, Phi)
//                               `classifier`  the same, under GPT-2's, GPT-NeoX's and
//                               BLOOM's name
// where H is ModelConfig::output_size().
//
//   POSTTRAIN_ASSIGN_OR_RETURN(SequenceClassifier rm, LoadSequenceClassifier(dir, at::kFloat));
//   at::Tensor r = SequenceScores(*rm.backbone, rm.head, batch).squeeze(-1);  // [N]
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/model/completion_batch.h"

namespace posttrain {

enum class ClassifierTask {
  kSequence,  // one label per sequence, read at its last real token
  kToken,     // one label per token
};

struct ClassifierHead {
  ClassifierTask task = ClassifierTask::kSequence;
  std::string name = "score";  // the checkpoint's prefix: "score" or "classifier"
  at::Tensor weight;           // [num_labels, output_size]
  at::Tensor bias;             // [num_labels], or undefined (no bias)

  std::int64_t num_labels() const { return weight.size(0); }
  // weight · h + bias over the last dimension of `hidden` (its dtype).
  at::Tensor operator()(const at::Tensor& hidden) const { return at::linear(hidden, weight, bias); }
  // {"<name>.weight", weight}, and {"<name>.bias", bias} when it has one: the
  // tensors saved beside the backbone's.
  std::vector<std::pair<std::string, at::Tensor>> Named() const;
};

// transformers' classifier class of a causal-LM architecture:
// ("LlamaForCausalLM", kToken) → "LlamaForTokenClassification",
// ("GPT2LMHeadModel", kSequence) → "GPT2ForSequenceClassification".
std::string ClassifierArchitecture(const std::string& causal_architecture, ClassifierTask task);

// OK where transformers has the family's classifier for `task` (so that what a
// classifier trainer saves loads there), else Unimplemented naming the missing class
// (CohereForSequenceClassification, OPTForTokenClassification, ...).
absl::Status TransformersHasClassifier(const ModelConfig& config, ClassifierTask task);

// A new head as transformers initialises one for this family: the weight drawn from
// N(0, initializer_range²) with a CPU generator seeded `seed`, the bias zero; named
// and biased as the table above says. In `options` (the backbone's dtype and device).
ClassifierHead NewClassifierHead(const ModelConfig& config, ClassifierTask task, std::int64_t num_labels,
                                 std::uint64_t seed, const at::TensorOptions& options);

// The head a classifier trainer starts from: a copy of `existing` (the model
// directory's own head, TrainerContext::classifier_head) when there is one, else a
// NewClassifierHead. InvalidArgument when `existing` belongs to the other task or
// has another num_labels.
absl::StatusOr<ClassifierHead> StartingClassifierHead(const ClassifierHead* existing, const ModelConfig& config,
                                                      ClassifierTask task, std::int64_t num_labels, std::uint64_t seed,
                                                      const at::TensorOptions& options);

// The dropout transformers' *ForTokenClassification applies to the hidden states
// before its head in training: config.json's `classifier_dropout`, else its
// `hidden_dropout`, else 0.1 (GPT-NeoX's config holds classifier_dropout, default
// 0.1). Read from `model_dir`/config.json; 0.1 when it cannot be read.
double TokenClassifierDropout(const std::string& model_dir);

// A model directory as a trainer starts from it: the backbone, and when config.json
// declares a *ForSequenceClassification or *ForTokenClassification, that classifier's
// head (a reward model or process reward model to go on training). A classifier
// without an LM head gets a zero placeholder one. Errors name the directory and the
// missing or mis-shaped tensor.
struct LoadedModel {
  std::unique_ptr<CausalLM> model;
  std::optional<ClassifierHead> head;
};
absl::StatusOr<LoadedModel> LoadModelAndHead(const std::string& dir, at::ScalarType dtype);

struct SequenceClassifier {
  std::unique_ptr<CausalLM> backbone;  // its LM head is unused
  ClassifierHead head;                 // the backbone's dtype
};

// Loads a directory whose config.json declares *ForSequenceClassification (its head
// `score.weight`). NotFound / InvalidArgument naming the directory and what is
// missing or mis-shaped.
absl::StatusOr<SequenceClassifier> LoadSequenceClassifier(const std::string& dir, at::ScalarType dtype);

// The same for token classifiers (*ForTokenClassification: `score` or `classifier`,
// with its bias when the checkpoint has one).
absl::StatusOr<SequenceClassifier> LoadTokenClassifier(const std::string& dir, at::ScalarType dtype);

// Scores [N, num_labels] fp32 of prompt + completion rows: head(h_last), with h_last
// the backbone's final (normed) hidden state at each row's last real token.
// Differentiable w.r.t. the backbone and the head when they require grad.
at::Tensor SequenceScores(const CausalLM& backbone, const ClassifierHead& head, const CompletionBatch& batch);

}  // namespace posttrain
