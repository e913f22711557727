// config.json: architectures, sizes, rope_scaling, token ids. A config that parses
// and is small enough also builds its model (the RoPE tables: yarn's ramp, dynamic
// NTK's base, longrope's factors; the experts' routing) and runs a forward whose positions reach past
// max_position_embeddings, where the length-dependent tables switch (GPT-2's learned
// positions: up to it; Mamba's scan: a few tokens).
#include <c10/core/GradMode.h>

#include "nlohmann/json.hpp"
#include "posttrain/core/device.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/model/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  const absl::StatusOr<posttrain::ModelConfig> config = posttrain::ModelConfig::FromJson(j);
  if (!config.ok() || config->vocab_size > 256 || config->hidden_size > 64 || config->intermediate_size > 128 ||
      config->num_hidden_layers > 3 || config->num_attention_heads > 8 || config->head_dim > 32 ||
      (config->max_position_embeddings > 64 && !config->mamba) || config->num_experts > 16 ||
      config->moe_intermediate_size > 128 || config->shared_expert_intermediate_size > 128 ||
      config->q_lora_rank > 2048 || config->kv_lora_rank > 1024 || config->qk_nope_head_dim > 256 ||
      config->qk_rope_head_dim > 256 || config->v_head_dim > 256 || config->state_size > 32 || config->conv_kernel > 8 ||
      config->time_step_rank > 64) {
    return 0;
  }
  auto model = posttrain::CausalLM::Random(*config, at::kFloat, 1);
  if (!model.ok()) return 0;
  c10::NoGradGuard no_grad;
  // Learned positions (GPT-2) end at max_position_embeddings: a forward past them
  // is refused (Gpt2MatchesThePythonTranscriptionOnEveryPath), not fuzzed here.
  // Mamba has no positions (nor a bound): a few tokens through its scan.
  const std::int64_t T = config->mamba ? 8 : config->max_position_embeddings + (config->learned_positions ? 0 : 2);
  const at::Tensor ids = at::zeros({1, T}, posttrain::HostOptions(at::kLong));
  const at::Tensor positions = at::arange(T, posttrain::HostOptions(at::kLong)).unsqueeze(0);
  (void)(*model)->Forward(ids, positions, at::Tensor(), nullptr);
  return 0;
}
