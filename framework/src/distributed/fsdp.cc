#include "posttrain/distributed/fsdp.h"

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "posttrain/core/status.h"

namespace posttrain {

struct ShardedModel::Unit {
  std::string name;                                        // "fsdp.layers.<i>" or "fsdp.root"
  std::vector<std::pair<std::string, at::Tensor>> params;  // the model's own tensors
  std::vector<std::vector<std::int64_t>> shapes;
  std::int64_t numel = 0;       // whole, unpadded
  std::int64_t shard_size = 0;  // S: numel padded to a multiple of the world size, / world
  at::Tensor shard;             // this rank's slice, a leaf
  at::Tensor full;              // the gathered flat buffer while whole
  // Layer functions of forward passes whose backward has not run yet, by id.
  std::map<std::int64_t, std::function<at::Tensor(const at::Tensor&)>> pending;
  std::int64_t next_id = 0;
};

// A view of the same weights without the adapter (PEFT's disable_adapter: the
// reference of an adapter run) runs its layers through the same units, without the
// adapter's tensors.
class ShardedModel::BaseLayerRunner final : public LayerRunner {
 public:
  explicit BaseLayerRunner(ShardedModel* owner) : owner_(owner) {}
  at::Tensor Run(std::int64_t index, const at::Tensor& input, std::function<at::Tensor(const at::Tensor&)> layer) override {
    return owner_->RunLayer(index, input, std::move(layer), /*with_extras=*/false);
  }

 private:
  ShardedModel* owner_;
};

namespace {

void ThrowIfError(const absl::Status& status) {
  TORCH_CHECK(status.ok(), std::string(status.message()));
}

// The default generator of `device`'s type (dropout in a layer draws from it).
at::Generator DefaultGenerator(const at::Device& device) {
  return at::globalContext().defaultGenerator(device);
}

// One decoder layer of a sharded model: gathers the layer for forward, and in
// backward gathers it again, recomputes the layer and reduce-scatters the
// parameter gradients into the shard's gradient. `extras` are tensors outside the
// shards that the layer reads and that take gradients (an adapter's parameters):
// inputs of the function, so that autograd reaches them, with their gradients from
// the recomputation. The recomputation draws the same random numbers as the
// forward (the generator's state is kept from forward and restored around it), so
// dropout in the layer masks alike.
struct UnitFunction : public torch::autograd::Function<UnitFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                                                const at::Tensor& shard, at::TensorList extras, std::int64_t self_address,
                                                std::int64_t index, std::int64_t backward) {
    auto* self = reinterpret_cast<ShardedModel*>(self_address);
    ShardedModel::Unit& u = self->unit(static_cast<size_t>(index));
    const std::int64_t id = u.next_id - 1;  // the function Run just registered
    self->Gather(u);
    if (backward != 0) {
      at::Generator generator = DefaultGenerator(input.device());
      std::lock_guard<std::mutex> lock(generator.mutex());
      ctx->saved_data["rng"] = generator.get_state();
    }
    at::Tensor out = u.pending.at(id)(input);
    if (backward == 0) u.pending.erase(id);
    if (backward == 0 || self->strategy() == ShardedModel::Strategy::kFullShard) self->Release(u);
    ctx->save_for_backward({input});
    ctx->saved_data["self"] = self_address;
    ctx->saved_data["index"] = index;
    ctx->saved_data["id"] = id;
    ctx->saved_data["extras"] = static_cast<std::int64_t>(extras.size());
    return {out};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto* self = reinterpret_cast<ShardedModel*>(ctx->saved_data["self"].toInt());
    const auto index = static_cast<size_t>(ctx->saved_data["index"].toInt());
    ShardedModel::Unit& u = self->unit(index);
    const std::int64_t id = ctx->saved_data["id"].toInt();
    const auto num_extras = static_cast<size_t>(ctx->saved_data["extras"].toInt());
    const at::Tensor input = ctx->get_saved_variables()[0];
    auto fn = u.pending.find(id);
    TORCH_CHECK(fn != u.pending.end(), "fsdp: backward of ", u.name, " ran twice");
    self->Gather(u);
    c10::AutoGradMode grad_mode(true);
    const bool input_grad = ctx->needs_input_grad(0);
    at::Tensor x = input.detach().requires_grad_(input_grad);
    at::Tensor out;
    {
      // The forward's random numbers again; the generator then goes on as it was.
      // (Its lock only around the state's exchange: the layer's dropout takes it.)
      at::Generator generator = DefaultGenerator(input.device());
      auto exchange = [&](const at::Tensor& state) {
        std::lock_guard<std::mutex> lock(generator.mutex());
        at::Tensor before = generator.get_state();
        generator.set_state(state);
        return before;
      };
      const at::Tensor now = exchange(ctx->saved_data["rng"].toTensor());
      try {
        out = fn->second(x);
      } catch (...) {
        exchange(now);
        throw;
      }
      exchange(now);
    }
    u.pending.erase(fn);
    std::vector<at::Tensor> inputs;
    if (input_grad) inputs.push_back(x);
    const std::vector<at::Tensor>& extras = self->extras(index);
    TORCH_CHECK(extras.size() == num_extras, "fsdp: ", u.name, "'s extra tensors changed between forward and backward");
    for (const at::Tensor& e : extras) inputs.push_back(e);
    if (self->trainable()) {
      for (const auto& [name, p] : u.params) inputs.push_back(p);
    }
    std::vector<at::Tensor> grads = torch::autograd::grad({out}, inputs, {grad_outputs[0]}, /*retain_graph=*/false,
                                                          /*create_graph=*/false, /*allow_unused=*/true);
    size_t k = 0;
    at::Tensor grad_input = input_grad ? grads[k++] : at::Tensor();
    torch::autograd::variable_list result = {grad_input, at::Tensor()};
    for (size_t e = 0; e < num_extras; ++e) result.push_back(grads[k++]);
    if (self->trainable()) {
      std::vector<at::Tensor> param_grads(grads.begin() + static_cast<std::ptrdiff_t>(k), grads.end());
      result[1] = self->ReduceScatter(u, param_grads);
    }
    self->Release(u);
    result.insert(result.end(), {at::Tensor(), at::Tensor(), at::Tensor()});  // self, index, backward
    return result;
  }
};

}  // namespace

absl::StatusOr<ShardedModel::Strategy> ShardedModel::ParseStrategy(const std::string& name) {
  if (name == "full_shard") return Strategy::kFullShard;
  if (name == "shard_grad_op") return Strategy::kShardGradOp;
  return absl::InvalidArgumentError(absl::StrCat("fsdp = \"", name, "\": expected \"full_shard\" or \"shard_grad_op\""));
}

std::vector<std::pair<std::string, at::Tensor>> ShardedModel::ShardMasks(
    const std::function<bool(const std::string&)>& keep) const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  const std::int64_t world = group_->world_size(), rank = group_->rank();
  for (const auto& u : units_) {
    at::Tensor whole = at::zeros({u->shard_size * world}, at::TensorOptions().dtype(at::kFloat));
    std::int64_t offset = 0;
    for (size_t i = 0; i < u->params.size(); ++i) {
      std::int64_t n = 1;
      for (std::int64_t d : u->shapes[i]) n *= d;
      if (keep(u->params[i].first)) whole.narrow(0, offset, n).fill_(1.0);
      offset += n;
    }
    out.push_back({u->name, whole.narrow(0, rank * u->shard_size, u->shard_size).clone()});
  }
  return out;
}

ShardedModel::~ShardedModel() {
  if (model_ != nullptr) model_->set_layer_runner(nullptr);
}

absl::StatusOr<std::unique_ptr<ShardedModel>> ShardedModel::Shard(CausalLM* model, ProcessGroup* group, Strategy strategy,
                                                                  bool trainable) {
  std::unique_ptr<ShardedModel> s(new ShardedModel());
  s->model_ = model;
  s->group_ = group;
  s->strategy_ = strategy;
  s->trainable_ = trainable;
  const std::int64_t layers = model->config().num_hidden_layers;
  for (std::int64_t i = 0; i <= layers; ++i) {
    auto u = std::make_unique<Unit>();
    u->name = i < layers ? absl::StrCat("fsdp.layers.", i) : "fsdp.root";
    s->units_.push_back(std::move(u));
  }
  // Each parameter to its unit (a tied LM head is the embedding: listed once).
  for (const auto& [name, p] : model->named_parameters()) {
    const std::int64_t layer = DecoderLayerOf(name);
    if (layer >= layers) return absl::InternalError(absl::StrCat("fsdp: ", name, " is beyond the model's ", layers, " layers"));
    const size_t unit = static_cast<size_t>(layer >= 0 ? layer : layers);
    Unit& u = *s->units_[unit];
    u.params.push_back({name, p});
    u.shapes.push_back(p.sizes().vec());
    u.numel += p.numel();
  }
  const int world = group->world_size(), rank = group->rank();
  c10::NoGradGuard no_grad;
  for (auto& u : s->units_) {
    if (u->params.empty()) return absl::InternalError(absl::StrCat("fsdp: unit ", u->name, " has no parameters"));
    const at::ScalarType dtype = u->params[0].second.scalar_type();
    std::vector<at::Tensor> flat;
    for (const auto& [name, p] : u->params) {
      if (p.scalar_type() != dtype) return absl::InvalidArgumentError(absl::StrCat("fsdp: ", name, " is not ", dtype));
      flat.push_back(p.detach().reshape({-1}));
    }
    u->shard_size = (u->numel + world - 1) / world;
    at::Tensor whole = at::zeros({u->shard_size * world}, u->params[0].second.options().requires_grad(false));
    whole.narrow(0, 0, u->numel).copy_(at::cat(flat));
    u->shard = whole.narrow(0, rank * u->shard_size, u->shard_size).clone().requires_grad_(trainable);
    s->shards_.push_back({u->name, u->shard});
    for (auto& [name, p] : u->params) p.requires_grad_(trainable);
    s->Release(*u);
  }
  model->set_layer_runner(s.get());
  return s;
}

std::int64_t ShardedModel::UnitNumel(const std::string& name) const {
  for (const auto& u : units_) {
    if (u->name == name) return u->numel;
  }
  return -1;
}

at::Tensor ShardedModel::Gather(Unit& u) {
  if (u.full.defined()) return u.full;
  c10::NoGradGuard no_grad;
  absl::StatusOr<at::Tensor> full = group_->AllGatherFlat(u.shard.detach());
  ThrowIfError(full.status());
  u.full = *std::move(full);
  std::int64_t offset = 0;
  for (size_t k = 0; k < u.params.size(); ++k) {
    at::Tensor& p = u.params[k].second;
    const std::int64_t n = c10::multiply_integers(u.shapes[k]);
    p.set_(u.full.narrow(0, offset, n).view(u.shapes[k]));
    offset += n;
  }
  return u.full;
}

void ShardedModel::Release(Unit& u) {
  c10::NoGradGuard no_grad;
  for (auto& [name, p] : u.params) p.set_(at::empty({0}, p.options()));
  u.full = at::Tensor();
}

at::Tensor ShardedModel::ReduceScatter(Unit& u, const std::vector<at::Tensor>& grads) {
  c10::NoGradGuard no_grad;
  const int world = group_->world_size();
  at::Tensor flat = at::zeros({u.shard_size * world}, u.shard.options().requires_grad(false));
  std::int64_t offset = 0;
  for (size_t k = 0; k < u.params.size(); ++k) {
    const std::int64_t n = c10::multiply_integers(u.shapes[k]);
    if (k < grads.size() && grads[k].defined()) flat.narrow(0, offset, n).copy_(grads[k].reshape({-1}));
    offset += n;
  }
  absl::StatusOr<at::Tensor> mine = group_->ReduceScatterMean(flat);
  ThrowIfError(mine.status());
  return *std::move(mine);
}

at::Tensor ShardedModel::Run(std::int64_t index, const at::Tensor& input, std::function<at::Tensor(const at::Tensor&)> layer) {
  return RunLayer(index, input, std::move(layer), /*with_extras=*/true);
}

at::Tensor ShardedModel::RunLayer(std::int64_t index, const at::Tensor& input,
                                  std::function<at::Tensor(const at::Tensor&)> layer, bool with_extras) {
  Unit& u = *units_[static_cast<size_t>(index)];
  if (all_gathered_) return layer(input);
  static const std::vector<at::Tensor> kNone;
  const std::vector<at::Tensor>& extras = with_extras ? this->extras(static_cast<size_t>(index)) : kNone;
  bool backward = input.requires_grad() || u.shard.requires_grad();
  for (const at::Tensor& e : extras) backward = backward || e.requires_grad();
  backward = backward && c10::GradMode::is_enabled();
  u.pending[u.next_id++] = std::move(layer);
  return UnitFunction::apply(input, u.shard, at::TensorList(extras), reinterpret_cast<std::int64_t>(this), index,
                             static_cast<std::int64_t>(backward))[0];
}

void ShardedModel::SetLayerExtras(std::vector<std::vector<at::Tensor>> per_layer) {
  per_layer.resize(units_.size() - 1);
  extras_ = std::move(per_layer);
}

const std::vector<at::Tensor>& ShardedModel::extras(size_t index) const {
  static const std::vector<at::Tensor> kNone;
  return index < extras_.size() ? extras_[index] : kNone;
}

LayerRunner* ShardedModel::BaseRunner() {
  if (base_runner_ == nullptr) base_runner_ = std::make_unique<BaseLayerRunner>(this);
  return base_runner_.get();
}

absl::Status ShardedModel::BeginStep() {
  try {
    Gather(*units_.back());
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("fsdp: gathering the root unit: ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status ShardedModel::EndStep() {
  Unit& root = *units_.back();
  try {
    if (trainable_) {
      std::vector<at::Tensor> grads;
      for (auto& [name, p] : root.params) grads.push_back(p.grad());
      at::Tensor shard_grad = ReduceScatter(root, grads);
      c10::NoGradGuard no_grad;
      if (root.shard.grad().defined()) {
        root.shard.mutable_grad().add_(shard_grad);
      } else {
        root.shard.mutable_grad() = shard_grad;
      }
      for (auto& [name, p] : root.params) p.mutable_grad() = at::Tensor();
    }
    Release(root);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("fsdp: reducing the root unit's gradient: ", e.what()));
  }
  for (auto& u : units_) u->pending.clear();  // forwards that never ran backward
  return absl::OkStatus();
}

absl::Status ShardedModel::GatherAll() {
  try {
    for (auto& u : units_) Gather(*u);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("fsdp: gathering the whole model: ", e.what()));
  }
  all_gathered_ = true;
  model_->set_layer_runner(nullptr);  // whole weights: the model's own paths (fused decoding too)
  return absl::OkStatus();
}

absl::Status ShardedModel::ReleaseAll() {
  for (auto& u : units_) Release(*u);
  all_gathered_ = false;
  model_->set_layer_runner(this);
  return absl::OkStatus();
}

at::Tensor ShardedModel::SliceFlat(const std::string& name, const at::Tensor& whole) const {
  for (const auto& u : units_) {
    if (u->name != name) continue;
    const int world = group_->world_size();
    at::Tensor padded = at::zeros({u->shard_size * world}, whole.options());
    padded.narrow(0, 0, std::min(u->numel, whole.numel())).copy_(whole.reshape({-1}).narrow(0, 0, std::min(u->numel, whole.numel())));
    return padded.narrow(0, group_->rank() * u->shard_size, u->shard_size).clone();
  }
  return at::Tensor();
}

absl::Status ShardedModel::LoadWhole(const std::map<std::string, at::Tensor>& tensors) {
  c10::NoGradGuard no_grad;
  for (auto& u : units_) {
    std::vector<at::Tensor> flat;
    for (size_t k = 0; k < u->params.size(); ++k) {
      auto it = tensors.find(u->params[k].first);
      if (it == tensors.end() || it->second.sizes().vec() != u->shapes[k]) {
        return absl::DataLossError(absl::StrCat("lacks or mis-shapes '", u->params[k].first, "'"));
      }
      flat.push_back(it->second.reshape({-1}).to(u->shard.scalar_type()));
    }
    u->shard.copy_(SliceFlat(u->name, at::cat(flat)));
  }
  return absl::OkStatus();
}

std::vector<std::vector<std::string>> ShardedModel::UnitParameterNames() const {
  std::vector<std::vector<std::string>> out;
  for (const auto& u : units_) {
    out.emplace_back();
    for (const auto& [name, p] : u->params) out.back().push_back(name);
  }
  return out;
}

absl::Status ShardedModel::GatherUnit(size_t index) {
  try {
    Gather(*units_.at(index));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("fsdp: gathering ", units_.at(index)->name, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status ShardedModel::ReleaseUnit(size_t index) {
  Release(*units_.at(index));
  return absl::OkStatus();
}

std::int64_t ShardedModel::ShardBytes() const {
  std::int64_t bytes = 0;
  for (const auto& u : units_) bytes += u->shard.numel() * static_cast<std::int64_t>(u->shard.element_size());
  return bytes;
}

}  // namespace posttrain
