#include "posttrain/train/adamw.h"

#include <c10/core/GradMode.h>
#include <cmath>
#include <map>
#include <regex>

#include "absl/strings/str_cat.h"
#include "posttrain/core/device.h"

namespace posttrain {

bool DecaysWeight(const std::string& name) {
  static const std::regex kExempt(R"(bias|layernorm|rmsnorm|(^|\.)norm($|\.)|_norm($|\.))");
  std::string lower = name;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return !std::regex_search(lower, kExempt);
}

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {
  for (const auto& [name, p] : params_) {
    decays_.push_back(DecaysWeight(name));
    decay_mask_.emplace_back();
    exp_avg_.push_back(at::zeros_like(p, at::kFloat));
    exp_avg_sq_.push_back(at::zeros_like(p, at::kFloat));
    // Low-precision parameters are updated through an fp32 master copy: an update
    // below bf16's resolution (2^-8 relative) would otherwise be rounded away.
    master_.push_back(p.scalar_type() == at::kFloat ? at::Tensor() : p.detach().to(at::kFloat));
  }
}

void AdamW::Step(double lr) {
  c10::NoGradGuard no_grad;
  ++step_;
  const double bias1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_));
  const double bias2 = 1.0 - std::pow(options_.beta2, static_cast<double>(step_));
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& p = params_[i].second;
    if (!p.grad().defined()) continue;
    at::Tensor g = p.grad().to(at::kFloat);
    at::Tensor& master = master_[i].defined() ? master_[i] : p;
    if (options_.weight_decay != 0.0 && decay_mask_[i].defined()) {
      master.mul_(1.0 - lr * options_.weight_decay * decay_mask_[i]);
    } else if (options_.weight_decay != 0.0 && decays_[i]) {
      master.mul_(1.0 - lr * options_.weight_decay);
    }
    exp_avg_[i].mul_(options_.beta1).add_(g, 1.0 - options_.beta1);
    exp_avg_sq_[i].mul_(options_.beta2).addcmul_(g, g, 1.0 - options_.beta2);
    at::Tensor denom = (exp_avg_sq_[i] / bias2).sqrt_().add_(options_.eps);
    master.addcdiv_(exp_avg_[i], denom, -lr / bias1);
    if (master_[i].defined()) p.copy_(master);
  }
}

absl::Status AdamW::SetDecayMask(const std::string& name, const at::Tensor& mask) {
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].first != name) continue;
    if (!mask.sizes().equals(params_[i].second.sizes())) {
      return absl::InvalidArgumentError(absl::StrCat("adamw: the decay mask of '", name, "' must have its shape"));
    }
    decay_mask_[i] = mask.to(params_[i].second.device(), at::kFloat);
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("adamw: no parameter '", name, "'"));
}

void AdamW::ZeroGrad() {
  for (auto& [name, p] : params_) {
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  }
}

double AdamW::ClipGradNorm(double max_norm) {
  const double norm = std::sqrt(GradSquares([](const std::string&) { return 1.0; }));
  ClipToNorm(norm, max_norm);
  return norm;
}

double AdamW::GradSquares(const std::function<double(const std::string& name)>& weight) const {
  c10::NoGradGuard no_grad;
  double total = 0.0;
  for (const auto& [name, p] : params_) {
    if (!p.grad().defined()) continue;
    // Each tensor's norm in its own precision, as torch.nn.utils.clip_grad_norm_
    // computes it (no fp64 copy of every gradient: that copy and its pow were 8% of a
    // bf16 SFT step at stories15M's shape), the squares summed in fp64.
    const double n = at::linalg_vector_norm(p.grad(), 2).item<double>();
    total += weight(name) * n * n;
  }
  return total;
}

void AdamW::ClipToNorm(double norm, double max_norm) {
  if (max_norm <= 0 || norm <= max_norm) return;
  c10::NoGradGuard no_grad;
  const double coef = max_norm / (norm + 1e-6);
  for (auto& [name, p] : params_) {
    if (p.grad().defined()) p.mutable_grad().mul_(coef);
  }
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::StateDict() const {
  std::vector<std::pair<std::string, at::Tensor>> state;
  for (size_t i = 0; i < params_.size(); ++i) {
    state.push_back({"exp_avg." + params_[i].first, exp_avg_[i]});
    state.push_back({"exp_avg_sq." + params_[i].first, exp_avg_sq_[i]});
    if (master_[i].defined()) state.push_back({"master." + params_[i].first, master_[i]});
  }
  state.push_back({"step", at::tensor(step_, HostOptions(at::kLong))});  // checkpoint state
  return state;
}

absl::Status AdamW::LoadStateDict(const std::map<std::string, at::Tensor>& state) {
  auto step = state.find("step");
  if (step == state.end()) return absl::InvalidArgumentError("optimizer state lacks 'step'");
  for (size_t i = 0; i < params_.size(); ++i) {
    for (auto [prefix, dst] : {std::pair{"exp_avg.", &exp_avg_[i]}, {"exp_avg_sq.", &exp_avg_sq_[i]}}) {
      auto it = state.find(prefix + params_[i].first);
      if (it == state.end() || it->second.sizes() != dst->sizes()) {
        return absl::InvalidArgumentError(
            absl::StrCat("optimizer state lacks or mis-shapes '", prefix, params_[i].first, "'"));
      }
      dst->copy_(it->second);
    }
    if (master_[i].defined()) {
      // A checkpoint without master weights (written in fp32, or by an older
      // version) starts them from the parameters themselves.
      auto it = state.find("master." + params_[i].first);
      if (it != state.end() && it->second.sizes() == master_[i].sizes()) {
        master_[i].copy_(it->second);
      } else {
        master_[i].copy_(params_[i].second.detach());
      }
    }
  }
  step_ = step->second.item<std::int64_t>();
  return absl::OkStatus();
}

double ScheduledLearningRate(const std::string& type, double base_lr, std::int64_t step,
                             std::int64_t max_steps, std::int64_t warmup_steps) {
  // transformers evaluates the lambda at the 0-based count of completed steps.
  const double s = static_cast<double>(step - 1);
  const double warm = static_cast<double>(warmup_steps);
  if (type != "constant" && s < warm) return base_lr * s / std::max(1.0, warm);
  if (type == "constant" || type == "constant_with_warmup") return base_lr;
  const double progress = (s - warm) / std::max(1.0, static_cast<double>(max_steps) - warm);
  if (type == "cosine") return base_lr * std::max(0.0, 0.5 * (1.0 + std::cos(3.14159265358979323846 * progress)));
  return base_lr * std::max(0.0, (static_cast<double>(max_steps) - s) / std::max(1.0, static_cast<double>(max_steps) - warm));
}

}  // namespace posttrain
