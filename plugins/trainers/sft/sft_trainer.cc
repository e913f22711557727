// Trainer "sft": supervised fine-tuning — next-token NLL (TRL's SFTTrainer).
//
//   loss = − Σ_t mask_t · log p(x_t | x_<t) / Σ_t mask_t      over the micro-batch
//
// mask: the completion tokens (completion_only_loss, TRL's default for
// prompt-completion data) or every token but the first. packing = true packs the
// micro-batch's sequences into rows of at most max_length tokens; each sequence
// keeps its own positions (from 0) and attends only to itself (block-diagonal
// attention), so packing never lets one sequence see another.
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
        .Bool("packing", false, "Pack sequences into rows of max_length, without cross-attention.");
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<SftTrainer>();
    t->completion_only_ = config.GetBool("completion_only_loss");
    t->packing_ = config.GetBool("packing");
    t->max_length_ = config.GetInt("max_length");
    if (t->packing_ && t->max_length_ <= 1) return config.Error("max_length", "packing needs max_length > 1");
    return t;
  }

  TrainerNeeds Needs() const override { return {}; }
  absl::Status Setup(const TrainerContext& context) override {
    policy_ = context.policy;
    return absl::OkStatus();
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    // Sequences and their loss masks (mask[t] = 1: token t is a target).
    struct Seq {
      std::vector<std::int64_t> ids;
      std::vector<float> target;
    };
    std::vector<Seq> seqs;
    for (const TokenizedExample* t : input.tokens) {
      Seq s;
      s.ids = t->prompt_ids;
      s.ids.insert(s.ids.end(), t->completion_ids.begin(), t->completion_ids.end());
      const size_t first_target = completion_only_ ? std::max<size_t>(1, t->prompt_ids.size()) : 1;
      s.target.assign(s.ids.size(), 0.0f);
      for (size_t k = first_target; k < s.ids.size(); ++k) s.target[k] = 1.0f;
      if (s.ids.size() >= 2) seqs.push_back(std::move(s));
    }
    if (seqs.empty()) return absl::InvalidArgumentError("sft: every sequence of the batch is shorter than 2 tokens");

    // Rows: one per sequence, or packed (first fit, longest first).
    std::vector<std::vector<size_t>> rows;
    if (packing_) {
      std::vector<size_t> by_length(seqs.size());
      for (size_t i = 0; i < seqs.size(); ++i) by_length[i] = i;
      std::stable_sort(by_length.begin(), by_length.end(),
                       [&](size_t a, size_t b) { return seqs[a].ids.size() > seqs[b].ids.size(); });
      std::vector<std::int64_t> used;
      for (size_t i : by_length) {
        size_t r = 0;
        while (r < rows.size() && used[r] + static_cast<std::int64_t>(seqs[i].ids.size()) > max_length_) ++r;
        if (r == rows.size()) {
          rows.emplace_back();
          used.push_back(0);
        }
        rows[r].push_back(i);
        used[r] += static_cast<std::int64_t>(seqs[i].ids.size());
      }
    } else {
      for (size_t i = 0; i < seqs.size(); ++i) rows.push_back({i});
    }
    std::int64_t width = 0;
    for (const auto& row : rows) {
      std::int64_t len = 0;
      for (size_t i : row) len += static_cast<std::int64_t>(seqs[i].ids.size());
      width = std::max(width, len);
    }
    const auto R = static_cast<std::int64_t>(rows.size());
    at::Tensor ids = at::zeros({R, width}, at::kLong), pos = at::zeros({R, width}, at::kLong);
    at::Tensor seg = at::zeros({R, width}, at::kLong), target = at::zeros({R, width}, at::kFloat);
    auto ids_a = ids.accessor<std::int64_t, 2>(), pos_a = pos.accessor<std::int64_t, 2>();
    auto seg_a = seg.accessor<std::int64_t, 2>();
    auto target_a = target.accessor<float, 2>();
    for (std::int64_t r = 0; r < R; ++r) {
      std::int64_t t = 0, segment = 0;
      for (size_t i : rows[static_cast<size_t>(r)]) {
        ++segment;
        for (size_t k = 0; k < seqs[i].ids.size(); ++k, ++t) {
          ids_a[r][t] = seqs[i].ids[k];
          pos_a[r][t] = static_cast<std::int64_t>(k);
          seg_a[r][t] = segment;
          target_a[r][t] = seqs[i].target[k];
        }
      }
    }
    at::Tensor hidden = policy_->Hidden(ids, pos, seg.ne(0).to(at::kLong), nullptr, packing_ ? seg : at::Tensor());
    // Position t predicts token t+1 (targets never cross a segment: a segment's
    // first token has target 0). Only positions with a target go through the LM
    // head, a chunk at a time (model/token_logprobs.h): no [R, W, V] logits.
    const std::int64_t h = hidden.size(2);
    at::Tensor next = ids.narrow(1, 1, width - 1).reshape({-1});
    at::Tensor mask = target.narrow(1, 1, width - 1).reshape({-1});
    const at::Tensor real = mask.nonzero().squeeze(1);
    const TokenLogprobsResult r = TokenLogprobs(hidden.narrow(1, 0, width - 1).reshape({-1, h}).index_select(0, real),
                                                policy_->lm_head_weight(), next.index_select(0, real), 1.0);
    const at::Tensor n_tokens = mask.sum();
    StepOutput out;
    out.loss = -(r.logprobs * mask.index_select(0, real)).sum() / n_tokens.clamp_min(1);
    at::Tensor correct = (r.argmax == next.index_select(0, real)).to(at::kFloat);
    out.metrics["mean_token_accuracy"] = (correct.sum() / n_tokens.clamp_min(1)).item<double>();
    out.metrics["num_tokens"] = n_tokens.item<double>();
    return out;
  }

 private:
  CausalLM* policy_ = nullptr;
  bool completion_only_ = true;
  bool packing_ = false;
  std::int64_t max_length_ = 1024;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("sft", posttrain::SftTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_sft");
