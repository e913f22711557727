// Trainer "sft": supervised fine-tuning — next-token NLL (TRL's SFTTrainer).
//
//   loss = − Σ_t mask_t · log p(x_t | x_<t) / Σ_t mask_t      over the micro-batch
//
// mask: the completion tokens (completion_only_loss, TRL's default for
// prompt-completion data) or every token but the first. Every micro-batch runs
// padding-free (TRL's padding_free): its sequences laid end to end, each with its
// own positions (from 0) and attention confined to itself, so no padding is
// computed and no sequence sees another. packing = true (TRL's packing, strategy
// "bfd") has the engine pack the training set into rows of at most max_length
// tokens before batching: a batch is then per_device_train_batch_size packed rows,
// each sequence still attending only to itself.
// assistant_only_loss = true (TRL's key; conversational data) restricts the mask to
// the assistant turns (TokenizedExample::completion_mask).
// Metrics (TRL): loss, mean_token_accuracy, num_tokens.
#include <algorithm>

#include "posttrain/model/causal_lm.h"
#include "posttrain/model/token_logprobs.h"
#include "posttrain/plugin/plugin.h"

namespace posttrain {
namespace {

class SftTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Supervised fine-tuning: next-token NLL on completions (or whole texts).")
        .Float("learning_rate", 2e-5, "Peak learning rate (TRL SFTConfig default).").AtLeast(0)
        .Bool("completion_only_loss", true, "Loss on completion tokens only (prompt-completion data).")
        .Bool("assistant_only_loss", false,
              "Loss on the assistant turns only (conversational data): from the template's {% generation %} blocks, "
              "or by rendering each assistant turn's prefix when it has none.")
        .Bool("packing", false, "Pack the training set into rows of max_length tokens (best-fit decreasing) before batching.");
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<SftTrainer>();
    t->completion_only_ = config.GetBool("completion_only_loss");
    t->assistant_only_ = config.GetBool("assistant_only_loss");
    if (config.GetBool("packing")) {
      t->pack_to_length_ = config.GetInt("max_length");
      if (t->pack_to_length_ <= 0) return config.Error("max_length", "packing needs max_length > 0");
    }
    return t;
  }

  TrainerNeeds Needs() const override {
    TrainerNeeds needs;
    needs.pack_to_length = pack_to_length_;
    needs.assistant_only_loss = assistant_only_;
    needs.router_aux_loss = true;
    return needs;
  }
  absl::Status Setup(const TrainerContext& context) override {
    policy_ = context.policy;
    collectives_ = context.collectives;
    return absl::OkStatus();
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    // Sequences and their loss masks (mask[t] = 1: token t is a target).
    struct Seq {
      std::vector<std::int64_t> ids;
      std::vector<float> target;
    };
    std::vector<const TokenizedExample*> members;
    for (const TokenizedExample* t : input.tokens) {
      if (t->packed.empty()) members.push_back(t);
      for (const TokenizedExample& m : t->packed) members.push_back(&m);
    }
    std::vector<Seq> seqs;
    for (const TokenizedExample* t : members) {
      Seq s;
      s.ids = t->prompt_ids;
      s.ids.insert(s.ids.end(), t->completion_ids.begin(), t->completion_ids.end());
      const size_t first_target = completion_only_ ? std::max<size_t>(1, t->prompt_ids.size()) : 1;
      s.target.assign(s.ids.size(), 0.0f);
      for (size_t k = first_target; k < s.ids.size(); ++k) s.target[k] = 1.0f;
      // assistant_only_loss: only the assistant turns' tokens (TRL's assistant_masks).
      for (size_t j = 0; j < t->completion_mask.size(); ++j) {
        if (t->completion_mask[j] == 0) s.target[t->prompt_ids.size() + j] = 0.0f;
      }
      if (s.ids.size() >= 2) seqs.push_back(std::move(s));
    }
    if (seqs.empty()) return absl::InvalidArgumentError("sft: every sequence of the batch is shorter than 2 tokens");

    // One padding-free stream (model/causal_lm.h): no padding is computed, each
    // sequence attends only to itself, positions restart per sequence.
    std::vector<std::vector<std::int64_t>> streams;
    std::vector<std::int64_t> next_ids, target_rows;
    std::int64_t offset = 0;
    for (const Seq& s : seqs) {
      streams.push_back(s.ids);
      // Position t predicts token t + 1; only positions with a target go through
      // the LM head, a chunk at a time (model/token_logprobs.h): no [N, V] logits.
      for (size_t k = 1; k < s.ids.size(); ++k) {
        if (s.target[k] == 0.0f) continue;
        target_rows.push_back(offset + static_cast<std::int64_t>(k) - 1);
        next_ids.push_back(s.ids[k]);
      }
      offset += static_cast<std::int64_t>(s.ids.size());
    }
    const PackedSequences packed = PackSequences(streams);
    const at::Tensor hidden = policy_->PackedHidden(packed);  // [tokens, H]
    const at::Tensor next = at::tensor(next_ids, hidden.options().dtype(at::kLong));
    const at::Tensor rows = at::tensor(target_rows, hidden.options().dtype(at::kLong));
    const double n_tokens = static_cast<double>(next_ids.size());
    // loss = Σ (−1/n) · log p: fixed weights, so both gradients come out of the
    // same pass as the loss (no second projection in backward). n counts the
    // tokens of every rank's share (the engine averages gradients over ranks), so
    // the loss is the mean over the global batch's tokens, as on one rank.
    POSTTRAIN_ASSIGN_OR_RETURN(const double global_tokens, collectives_->Sum(n_tokens));
    const double per_rank_tokens = global_tokens / collectives_->world_size();
    const at::Tensor token_weights = at::full({static_cast<std::int64_t>(next_ids.size())}, -1.0 / std::max(1.0, per_rank_tokens),
                                        hidden.options().dtype(at::kFloat));
    const WeightedLogprobSumResult r =
        WeightedTokenLogprobs(policy_->HeadInput(hidden.index_select(0, rows)), policy_->lm_head_weight(), next, token_weights,
                              /*chunk=*/0, policy_->logit_softcap());
    StepOutput out;
    out.loss = r.sum;
    const at::Tensor correct = (r.argmax == next).to(at::kFloat);
    out.metrics["mean_token_accuracy"] = correct.sum().item<double>() / std::max(1.0, n_tokens);
    out.metrics["num_tokens"] = n_tokens;
    return out;
  }

 private:
  CausalLM* policy_ = nullptr;
  const Collectives* collectives_ = nullptr;
  bool completion_only_ = true;
  bool assistant_only_ = false;
  std::int64_t pack_to_length_ = 0;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("sft", posttrain::SftTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_sft");
