// LoRA (and DoRA, use_dora) against full fine-tuning: trainable parameters, gradient
// and AdamW state bytes, and the time of a training step (forward + backward of an SFT
// loss over a batch, then the optimizer), on a random model of the stories15M shape.
//
//   build/bin/lora_bench [--r 8] [--targets all-linear] [--batch 8] [--length 256] [--steps 3]
//
// The optimizer state is measured from AdamW's own state after a step (exp_avg and
// exp_avg_sq, fp32), not computed from shapes.
#include <chrono>
#include <cstdio>
#include <string>

#include "bench_models.h"
#include "posttrain/api/adapter.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/model/token_logprobs.h"
#include "posttrain/plugin/plugin_host.h"
#include "posttrain/train/adamw.h"

namespace posttrain {
namespace {

struct Result {
  std::int64_t trainable = 0, grad_bytes = 0, state_bytes = 0;
  double step_s = 0;
};

std::int64_t Bytes(const at::Tensor& t) { return t.numel() * static_cast<std::int64_t>(t.element_size()); }

Result Measure(CausalLM& model, std::vector<std::pair<std::string, at::Tensor>> trainable, std::int64_t batch,
               std::int64_t length, int steps) {
  Result r;
  for (auto& [name, p] : trainable) {
    p.set_requires_grad(true);
    r.trainable += p.numel();
  }
  AdamW optimizer(trainable, AdamWOptions{});
  std::vector<std::vector<std::int64_t>> seqs(static_cast<size_t>(batch));
  at::Generator gen = at::detail::createCPUGenerator(1);
  for (auto& s : seqs) {
    at::Tensor ids = at::randint(model.config().vocab_size, {length}, gen, at::kLong);
    s.assign(ids.data_ptr<std::int64_t>(), ids.data_ptr<std::int64_t>() + length);
  }
  for (int step = 0; step < steps; ++step) {
    const auto start = std::chrono::steady_clock::now();
    optimizer.ZeroGrad();
    const at::Tensor hidden = model.PackedHidden(PackSequences(seqs));
    std::vector<std::int64_t> next;
    std::vector<std::int64_t> rows;
    for (std::int64_t b = 0; b < batch; ++b) {
      for (std::int64_t t = 0; t + 1 < length; ++t) {
        rows.push_back(b * length + t);
        next.push_back(seqs[static_cast<size_t>(b)][static_cast<size_t>(t + 1)]);
      }
    }
    const at::Tensor weights = at::full({static_cast<std::int64_t>(next.size())}, -1.0 / static_cast<double>(next.size()),
                                        hidden.options().dtype(at::kFloat));
    const WeightedLogprobSumResult loss =
        WeightedTokenLogprobs(model.HeadInput(hidden.index_select(0, at::tensor(rows, hidden.options().dtype(at::kLong)))),
                              model.lm_head_weight(), at::tensor(next, hidden.options().dtype(at::kLong)), weights);
    loss.sum.backward();
    optimizer.Step(1e-4);
    r.step_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  for (const auto& [name, p] : trainable) r.grad_bytes += p.grad().defined() ? Bytes(p.grad()) : 0;
  for (const auto& [name, t] : optimizer.StateDict()) r.state_bytes += Bytes(t);
  for (auto& [name, p] : trainable) p.set_requires_grad(false);
  return r;
}

int Main(int argc, char** argv) {
  std::int64_t r = 8, batch = 8, length = 256;
  int steps = 3;
  std::string targets = "all-linear";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--r") r = std::stoll(argv[i + 1]);
    if (flag == "--targets") targets = argv[i + 1];
    if (flag == "--batch") batch = std::stoll(argv[i + 1]);
    if (flag == "--length") length = std::stoll(argv[i + 1]);
    if (flag == "--steps") steps = std::stoi(argv[i + 1]);
  }
  PluginHost host;
  if (!host.LoadDefaultDirectories().ok()) return 1;
  const ModelConfig config = bench::Stories15MShape();
  auto model = CausalLM::Random(config, at::kFloat, 0);
  if (!model.ok()) return 1;

  std::vector<std::pair<std::string, at::Tensor>> all;
  for (const auto& [name, p] : (*model)->named_parameters()) all.push_back({name, p});
  const Result full = Measure(**model, all, batch, length, steps);

  const RegisteredComponent* c = host.registry().Find(ComponentKind::kAdapter, "lora");
  if (c == nullptr) return 1;
  auto measure_adapter = [&](bool dora, Result* out) {
    auto lora = host.registry().Create<Adapter>(ComponentConfig(
        "lora", &c->registration.schema,
        {{"r", r}, {"lora_alpha", static_cast<double>(2 * r)}, {"use_dora", dora},
         {"target_modules", std::vector<std::string>{targets}}},
        "bench"));
    if (!lora.ok() || !(*lora)->Attach(config, at::TensorOptions().dtype(at::kFloat), 0).ok() ||
        !(*lora)->Initialize(**model).ok()) {
      return false;
    }
    (*model)->set_adapter(lora->get());
    *out = Measure(**model, (*lora)->NamedParameters(), batch, length, steps);
    (*model)->set_adapter(nullptr);
    return true;
  };
  Result adapter, dora;
  if (!measure_adapter(false, &adapter) || !measure_adapter(true, &dora)) return 1;

  auto mib = [](std::int64_t b) { return static_cast<double>(b) / (1 << 20); };
  std::printf("stories15M shape (%.1fM parameters), batch %lld x %lld tokens, AdamW\n",
              static_cast<double>((*model)->NumParameters()) / 1e6, static_cast<long long>(batch),
              static_cast<long long>(length));
  std::printf("%-28s %14s %12s %16s %12s\n", "", "trainable", "grads MiB", "AdamW state MiB", "step s");
  std::printf("%-28s %14lld %12.2f %16.2f %12.3f\n", "full fine-tuning", static_cast<long long>(full.trainable),
              mib(full.grad_bytes), mib(full.state_bytes), full.step_s);
  std::printf("%-28s %14lld %12.2f %16.2f %12.3f\n", ("LoRA r=" + std::to_string(r) + " " + targets).c_str(),
              static_cast<long long>(adapter.trainable), mib(adapter.grad_bytes), mib(adapter.state_bytes), adapter.step_s);
  std::printf("%-28s %14lld %12.2f %16.2f %12.3f\n", ("DoRA r=" + std::to_string(r) + " " + targets).c_str(),
              static_cast<long long>(dora.trainable), mib(dora.grad_bytes), mib(dora.state_bytes), dora.step_s);
  std::printf("LoRA / full: trainable %.2f%%, optimizer state %.2f%%\n",
              100.0 * static_cast<double>(adapter.trainable) / static_cast<double>(full.trainable),
              100.0 * static_cast<double>(adapter.state_bytes) / static_cast<double>(full.state_bytes));
  std::printf("DoRA / full: trainable %.2f%%, optimizer state %.2f%%\n",
              100.0 * static_cast<double>(dora.trainable) / static_cast<double>(full.trainable),
              100.0 * static_cast<double>(dora.state_bytes) / static_cast<double>(full.state_bytes));
  return 0;
}

}  // namespace
}  // namespace posttrain

int main(int argc, char** argv) { return posttrain::Main(argc, argv); }
