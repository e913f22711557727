#include "posttrain/model/causal_lm.h"

#include <c10/core/GradMode.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <tuple>

#include <ATen/CPUGeneratorImpl.h>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "posttrain/core/autocast.h"
#include "posttrain/model/gemm.h"
#include "posttrain/model/selective_scan.h"
#include "posttrain/core/device.h"
#include "posttrain/core/status.h"

namespace posttrain {
namespace {

// At least fp32: what norms, RoPE tables and softmax are computed in.
at::ScalarType ComputeDtype(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

// transformers' LlamaRMSNorm: normalise in (at least) fp32, cast back, then scale.
// GemmaRMSNorm (config.norm_weight_offset): scale by (1 + weight) in fp32, then cast back.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, const ModelConfig& config) {
  at::Tensor h = x.to(ComputeDtype(x.scalar_type()));
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + config.rms_norm_eps);
  if (config.norm_weight_offset) return (h * (weight.to(h.scalar_type()) + 1.0)).to(x.scalar_type());
  if (config.norm_weight_in_fp32) return (weight.to(h.scalar_type()) * h).to(x.scalar_type());  // Olmo2RMSNorm
  return weight * h.to(x.scalar_type());
}

// The family's norm: RmsNorm, or (GPT-NeoX, config.layer_norm) torch's LayerNorm,
// (x - mean) / sqrt(var + eps) · weight + bias over the last dimension.
at::Tensor Norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const ModelConfig& config) {
  if (config.layer_norm) return at::layer_norm(x, {x.size(-1)}, weight, bias, config.rms_norm_eps);
  return RmsNorm(x, weight, config);
}

// Cohere's q/k norm (CohereLayerNorm over a (heads, head_dim) shape): x [.., heads,
// D] normalised over D in fp32, times weight [heads, D], cast back. Phi's
// (qk_layer_norm_shared): weight [D] for every head, plus bias [D].
at::Tensor HeadLayerNorm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  at::Tensor h = at::layer_norm(x.to(ComputeDtype(x.scalar_type())), {x.size(-1)}, {}, {}, eps);
  h = weight.to(h.scalar_type()) * h;
  if (bias.defined()) h = h + bias.to(h.scalar_type());
  return h.to(x.scalar_type());
}

// The norm before a sublayer: Norm, or x itself where the family has none (OLMo 2);
// OLMo's LayerNorm without parameters, in fp32 (OlmoLayerNorm).
at::Tensor PreNorm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const ModelConfig& config) {
  if (config.norm_without_parameters) {
    return at::layer_norm(x.to(ComputeDtype(x.scalar_type())), {x.size(-1)}, {}, {}, config.rms_norm_eps).to(x.scalar_type());
  }
  return weight.defined() ? Norm(x, weight, bias, config) : x;
}

// The MLP's activation on the gate projection (transformers' ACT2FN).
at::Tensor Activate(const at::Tensor& x, Activation activation) {
  switch (activation) {
    case Activation::kGelu: return at::gelu(x);
    case Activation::kGeluTanh: return at::gelu(x, "tanh");
    case Activation::kRelu: return at::relu(x);
    case Activation::kSilu: break;
  }
  return at::silu(x);
}

// c · tanh(x / c) for a soft cap c > 0 (Gemma 2's scores and logits); x when c is 0.
at::Tensor SoftCap(const at::Tensor& x, double cap) { return cap > 0 ? at::tanh(x / cap) * cap : x; }

// [.., D] → [-x2, x1] with x1, x2 the halves of the last dimension.
// (chunk, not narrow: the backward of a split is one concatenation.)
at::Tensor RotateHalf(const at::Tensor& x) {
  const std::vector<at::Tensor> halves = x.chunk(2, -1);
  return at::cat({-halves[1], halves[0]}, -1);
}

// Cohere's rotate_half: [.., D] → (-x1, x0, -x3, x2, ...), each adjacent pair rotated.
at::Tensor RotatePairs(const at::Tensor& x) {
  std::vector<std::int64_t> shape = x.sizes().vec();
  shape.back() /= 2;
  shape.push_back(2);
  const at::Tensor pairs = x.reshape(shape);
  return at::stack({-pairs.select(-1, 1), pairs.select(-1, 0)}, -1).reshape(x.sizes());
}

// x [.., K] · wᵀ + b. A single row goes through BLAS gemv (at::mv): for it,
// OpenBLAS's gemm copies (packs) the whole weight matrix on every call, which
// costs more than the product (measured: 36% of batch-1 decoding in sgemm_incopy).
at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = at::Tensor()) {
  if (x.numel() == x.size(-1) && x.scalar_type() == w.scalar_type() && !AnyAutocast()) {
    std::vector<std::int64_t> shape = x.sizes().vec();
    shape.back() = w.size(0);
    at::Tensor y = at::mv(w, x.reshape({-1}));
    if (b.defined()) y = y + b;
    return y.view(shape);
  }
  return internal::Linear(x, w, b);
}

std::string ShapeText(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape.vec(), ", "), "]");
}

}  // namespace

std::int64_t DecoderLayerOf(const std::string& name) {
  size_t at = name.find("model.layers."), skip = 13;
  if (at == std::string::npos) {  // GPT-NeoX's checkpoint (and PEFT) names
    at = name.find("gpt_neox.layers.");
    skip = 16;
  }
  if (at == std::string::npos) {  // GPT-2's
    at = name.find("transformer.h.");
    skip = 14;
  }
  if (at == std::string::npos) {  // OPT's
    at = name.find("model.decoder.layers.");
    skip = 21;
  }
  if (at == std::string::npos) {  // Mamba's
    at = name.find("backbone.layers.");
    skip = 16;
  }
  if (at == std::string::npos) {  // DBRX's
    at = name.find("transformer.blocks.");
    skip = 19;
  }
  if (at == std::string::npos || (at > 0 && name[at - 1] != '.')) return -1;
  const size_t begin = at + skip, end = name.find('.', begin);
  std::int64_t layer = -1;
  if (end == std::string::npos || !absl::SimpleAtoi(absl::string_view(name).substr(begin, end - begin), &layer)) return -1;
  return layer;
}

ExpertNames ExpertWeightNames(const ModelConfig& c, std::int64_t layer, std::int64_t expert) {
  const std::string p = absl::StrCat("model.layers.", layer, ".", c.moe_module(), ".experts.", expert, ".");
  if (c.model_type == "mixtral") return {p + "w1.weight", p + "w3.weight", p + "w2.weight"};
  return {p + "gate_proj.weight", p + "up_proj.weight", p + "down_proj.weight"};
}

std::vector<std::pair<std::string, std::vector<std::int64_t>>> ExpectedTensors(const ModelConfig& c) {
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> out;
  const std::int64_t q_dim = c.num_attention_heads * c.head_dim;
  const std::int64_t kv_dim = c.num_key_value_heads * c.head_dim;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, c.output_size()}});
  if (c.word_embed_proj_dim > 0) {  // OPT-350m: embeddings narrower than the layers
    out.push_back({"model.project_in.weight", {c.hidden_size, c.word_embed_proj_dim}});
    out.push_back({"model.project_out.weight", {c.word_embed_proj_dim, c.hidden_size}});
  }
  if (c.mamba) {  // MambaBlock: norm, then the mixer's tensors (checkpoints: backbone.*, MambaCheckpointName)
    const std::int64_t I = c.intermediate_size, N = c.state_size, R = c.time_step_rank;
    for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
      const std::string p = absl::StrCat("model.layers.", i, "."), m = p + "mixer.";
      out.push_back({p + "input_layernorm.weight", {c.hidden_size}});
      out.push_back({m + "A_log", {I, N}});
      out.push_back({m + "D", {I}});
      out.push_back({m + "conv1d.weight", {I, 1, c.conv_kernel}});
      if (c.use_conv_bias) out.push_back({m + "conv1d.bias", {I}});
      out.push_back({m + "in_proj.weight", {2 * I, c.hidden_size}});
      if (c.mamba_use_bias) out.push_back({m + "in_proj.bias", {2 * I}});
      out.push_back({m + "x_proj.weight", {R + 2 * N, I}});
      out.push_back({m + "dt_proj.weight", {I, R}});
      out.push_back({m + "dt_proj.bias", {I}});
      out.push_back({m + "out_proj.weight", {c.hidden_size, I}});
      if (c.mamba_use_bias) out.push_back({m + "out_proj.bias", {c.hidden_size}});
    }
    out.push_back({"model.norm.weight", {c.hidden_size}});
    if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}});
    return out;
  }
  if (c.embedding_layer_norm) {
    out.push_back({"model.embed_norm.weight", {c.hidden_size}});
    out.push_back({"model.embed_norm.bias", {c.hidden_size}});
  }
  if (c.learned_positions) {
    out.push_back({"model.embed_positions.weight", {c.max_position_embeddings + c.position_offset, c.hidden_size}});
  }
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    if (c.pre_norms && !c.norm_without_parameters) out.push_back({p + "input_layernorm.weight", {c.hidden_size}});
    if (c.pre_norms && c.layer_norm && c.layer_norm_bias) out.push_back({p + "input_layernorm.bias", {c.hidden_size}});
    if (c.mla()) {  // DeepseekV3Attention's modules, in its order
      const std::int64_t heads = c.num_attention_heads, latent = c.kv_lora_rank;
      if (c.q_lora_rank > 0) {
        out.push_back({p + "self_attn.q_a_proj.weight", {c.q_lora_rank, c.hidden_size}});
        if (c.attention_bias) out.push_back({p + "self_attn.q_a_proj.bias", {c.q_lora_rank}});
        out.push_back({p + "self_attn.q_a_layernorm.weight", {c.q_lora_rank}});
        out.push_back({p + "self_attn.q_b_proj.weight", {heads * c.qk_head_dim(), c.q_lora_rank}});
      } else {
        out.push_back({p + "self_attn.q_proj.weight", {heads * c.qk_head_dim(), c.hidden_size}});
      }
      out.push_back({p + "self_attn.kv_a_proj_with_mqa.weight", {latent + c.qk_rope_head_dim, c.hidden_size}});
      if (c.attention_bias) out.push_back({p + "self_attn.kv_a_proj_with_mqa.bias", {latent + c.qk_rope_head_dim}});
      out.push_back({p + "self_attn.kv_a_layernorm.weight", {latent}});
      out.push_back({p + "self_attn.kv_b_proj.weight", {heads * (c.qk_nope_head_dim + c.v_head_dim), latent}});
      out.push_back({p + "self_attn.o_proj.weight", {c.hidden_size, heads * c.v_head_dim}});
      if (c.output_bias) out.push_back({p + "self_attn.o_proj.bias", {c.hidden_size}});
    }
    if (!c.mla()) out.push_back({p + "self_attn.q_proj.weight", {q_dim, c.hidden_size}});
    if (!c.mla()) out.push_back({p + "self_attn.k_proj.weight", {kv_dim, c.hidden_size}});
    if (!c.mla()) out.push_back({p + "self_attn.v_proj.weight", {kv_dim, c.hidden_size}});
    if (c.attention_bias && !c.mla()) {
      out.push_back({p + "self_attn.q_proj.bias", {q_dim}});
      out.push_back({p + "self_attn.k_proj.bias", {kv_dim}});
      out.push_back({p + "self_attn.v_proj.bias", {kv_dim}});
    }
    if (c.qk_layer_norm && c.qk_layer_norm_shared) {  // Phi: one LayerNorm, with a bias, for all heads
      for (const char* norm : {"self_attn.q_norm.", "self_attn.k_norm."}) {
        out.push_back({p + norm + "weight", {c.head_dim}});
        out.push_back({p + norm + "bias", {c.head_dim}});
      }
    } else if (c.qk_layer_norm) {  // Cohere: one weight per head and dimension
      out.push_back({p + "self_attn.q_norm.weight", {c.num_attention_heads, c.head_dim}});
      out.push_back({p + "self_attn.k_norm.weight", {c.num_key_value_heads, c.head_dim}});
    } else if (c.qk_norm) {  // per head, or (OLMo 2) over the whole projection
      out.push_back({p + "self_attn.q_norm.weight", {c.qk_norm_over_heads ? q_dim : c.head_dim}});
      out.push_back({p + "self_attn.k_norm.weight", {c.qk_norm_over_heads ? kv_dim : c.head_dim}});
    }
    if (!c.mla()) out.push_back({p + "self_attn.o_proj.weight", {c.hidden_size, q_dim}});
    if (c.output_bias && !c.mla()) out.push_back({p + "self_attn.o_proj.bias", {c.hidden_size}});
    if (c.gpt_oss) out.push_back({p + "self_attn.sinks", {c.num_attention_heads}});
    if (!c.one_norm_per_layer && !c.norm_without_parameters) out.push_back({p + "post_attention_layernorm.weight", {c.hidden_size}});
    if (!c.one_norm_per_layer && c.layer_norm && c.layer_norm_bias) {
      out.push_back({p + "post_attention_layernorm.bias", {c.hidden_size}});
    }
    if (c.sandwich_norms) {
      if (c.pre_norms) out.push_back({p + "pre_feedforward_layernorm.weight", {c.hidden_size}});
      out.push_back({p + "post_feedforward_layernorm.weight", {c.hidden_size}});
    }
    if (!c.is_moe_layer(i)) {
      if (c.gated_mlp) out.push_back({p + "mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size}});
      out.push_back({p + "mlp.up_proj.weight", {c.intermediate_size, c.hidden_size}});
      if (c.mlp_bias) out.push_back({p + "mlp.up_proj.bias", {c.intermediate_size}});
      out.push_back({p + "mlp.down_proj.weight", {c.hidden_size, c.intermediate_size}});
      if (c.mlp_bias) out.push_back({p + "mlp.down_proj.bias", {c.hidden_size}});
      continue;
    }
    const std::string moe = absl::StrCat(p, c.moe_module(), ".");
    if (c.gpt_oss) {  // GptOssTopKRouter, GptOssExperts: fused, biased
      const std::int64_t E = c.num_experts, I = c.moe_intermediate_size, H = c.hidden_size;
      out.push_back({moe + "router.weight", {E, H}});
      out.push_back({moe + "router.bias", {E}});
      out.push_back({moe + "experts.gate_up_proj", {E, H, 2 * I}});
      out.push_back({moe + "experts.gate_up_proj_bias", {E, 2 * I}});
      out.push_back({moe + "experts.down_proj", {E, I, H}});
      out.push_back({moe + "experts.down_proj_bias", {E, H}});
      continue;
    }
    out.push_back({moe + "gate.weight", {c.num_experts, c.hidden_size}});  // the router
    if (c.router_sigmoid) out.push_back({moe + "gate.e_score_correction_bias", {c.num_experts}});
    for (std::int64_t e = 0; e < c.num_experts; ++e) {
      const ExpertNames names = ExpertWeightNames(c, i, e);
      out.push_back({names.gate, {c.moe_intermediate_size, c.hidden_size}});
      out.push_back({names.up, {c.moe_intermediate_size, c.hidden_size}});
      out.push_back({names.down, {c.hidden_size, c.moe_intermediate_size}});
    }
    if (c.shared_expert_intermediate_size > 0) {
      const std::int64_t width = c.shared_expert_intermediate_size;
      const std::string shared = absl::StrCat(moe, c.shared_expert_module(), ".");
      out.push_back({shared + "gate_proj.weight", {width, c.hidden_size}});
      out.push_back({shared + "up_proj.weight", {width, c.hidden_size}});
      out.push_back({shared + "down_proj.weight", {c.hidden_size, width}});
      if (c.shared_expert_gate) out.push_back({moe + "shared_expert_gate.weight", {1, c.hidden_size}});
    }
  }
  if (!c.post_layer_norm && !c.norm_without_parameters) out.push_back({"model.norm.weight", {c.hidden_size}});  // OPT-350m has none
  if (c.layer_norm && c.layer_norm_bias && !c.post_layer_norm) out.push_back({"model.norm.bias", {c.hidden_size}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, c.output_size()}});
  if (c.lm_head_bias) out.push_back({"lm_head.bias", {c.vocab_size}});
  return out;
}

namespace {

// One fused checkpoint tensor (Phi-3) and the model tensors it holds, by rows.
struct FusedTensor {
  std::string name;
  std::vector<std::string> parts;
  std::vector<std::int64_t> rows;

  std::int64_t total_rows() const { return std::accumulate(rows.begin(), rows.end(), std::int64_t{0}); }
};

std::vector<FusedTensor> FusedTensors(const ModelConfig& c) {
  std::vector<FusedTensor> out;
  if (!c.fused_projections) return out;
  const std::int64_t q_dim = c.num_attention_heads * c.head_dim, kv_dim = c.num_key_value_heads * c.head_dim;
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    out.push_back({p + "self_attn.qkv_proj.weight",
                   {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"},
                   {q_dim, kv_dim, kv_dim}});
    out.push_back({p + "mlp.gate_up_proj.weight", {p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"},
                   {c.intermediate_size, c.intermediate_size}});
  }
  return out;
}

// A family's checkpoint names as renamings of the model's: whole tensors by name,
// and inside decoder layer <i> ("model.layers.<i>" → `layers` + "<i>") the first
// module path of `modules` that the name holds. Other names pass unchanged.
struct CheckpointNaming {
  std::vector<std::pair<std::string, std::string>> whole;  // model's name → checkpoint's
  std::string layers;
  std::vector<std::pair<std::string, std::string>> modules;  // ".self_attn.o_proj." → ".attention.dense."
};

std::string Rename(const CheckpointNaming& naming, const std::string& name) {
  for (const auto& [ours, theirs] : naming.whole) {
    if (name == ours) return theirs;
  }
  if (!absl::StartsWith(name, "model.layers.")) return name;
  std::string out = naming.layers + name.substr(std::strlen("model.layers."));
  for (const auto& [ours, theirs] : naming.modules) {
    if (const size_t at = out.find(ours); at != std::string::npos) return out.replace(at, ours.size(), theirs);
  }
  return out;
}

// Names a checkpoint may hold without the prefix its class adds (the hub's gpt2,
// OPTModel's files): given the prefix. InvalidArgument if both forms are there.
absl::Status AddMissingPrefix(const std::string& prefix, const std::function<bool(const std::string&)>& bare,
                              std::map<std::string, at::Tensor>* tensors) {
  std::vector<std::string> names;
  for (const auto& [name, t] : *tensors) {
    if (bare(name)) names.push_back(name);
  }
  for (const std::string& name : names) {
    if (tensors->count(prefix + name)) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint holds both '", name, "' and '", prefix, name, "'"));
    }
    (*tensors)[prefix + name] = (*tensors)[name];
    tensors->erase(name);
  }
  return absl::OkStatus();
}

bool IsNeox(const ModelConfig& c) { return c.model_type == "gpt_neox"; }

// GPT-NeoX: the checkpoint's name of model tensor `name` (q/k/v: their fused
// attention.query_key_value); the layer norms keep their names.
std::string NeoxCheckpointName(const std::string& name) {
  static const CheckpointNaming naming{{{"model.embed_tokens.weight", "gpt_neox.embed_in.weight"},
                                        {"model.norm.weight", "gpt_neox.final_layer_norm.weight"},
                                        {"model.norm.bias", "gpt_neox.final_layer_norm.bias"},
                                        {"lm_head.weight", "embed_out.weight"}},
                                       "gpt_neox.layers.",
                                       {{".self_attn.q_proj.", ".attention.query_key_value."},
                                        {".self_attn.k_proj.", ".attention.query_key_value."},
                                        {".self_attn.v_proj.", ".attention.query_key_value."},
                                        {".self_attn.o_proj.", ".attention.dense."},
                                        {".mlp.up_proj.", ".mlp.dense_h_to_4h."},
                                        {".mlp.down_proj.", ".mlp.dense_4h_to_h."}}};
  return Rename(naming, name);
}

bool IsBloom(const ModelConfig& c) { return c.model_type == "bloom"; }

// BLOOM: the checkpoint's name of model tensor `name` (q/k/v: their fused
// self_attention.query_key_value, interleaved by head as GPT-NeoX's).
std::string BloomCheckpointName(const std::string& name) {
  static const CheckpointNaming naming{{{"model.embed_tokens.weight", "transformer.word_embeddings.weight"},
                                        {"model.embed_norm.weight", "transformer.word_embeddings_layernorm.weight"},
                                        {"model.embed_norm.bias", "transformer.word_embeddings_layernorm.bias"},
                                        {"model.norm.weight", "transformer.ln_f.weight"},
                                        {"model.norm.bias", "transformer.ln_f.bias"}},
                                       "transformer.h.",
                                       {{".self_attn.q_proj.", ".self_attention.query_key_value."},
                                        {".self_attn.k_proj.", ".self_attention.query_key_value."},
                                        {".self_attn.v_proj.", ".self_attention.query_key_value."},
                                        {".self_attn.o_proj.", ".self_attention.dense."},
                                        {".mlp.up_proj.", ".mlp.dense_h_to_4h."},
                                        {".mlp.down_proj.", ".mlp.dense_4h_to_h."}}};
  return Rename(naming, name);
}

bool IsGpt2(const ModelConfig& c) { return c.model_type == "gpt2"; }

// GPT-2: the checkpoint's name of model tensor `name` (q/k/v: their fused attn.c_attn).
std::string Gpt2CheckpointName(const std::string& name) {
  static const CheckpointNaming naming{{{"model.embed_tokens.weight", "transformer.wte.weight"},
                                        {"model.embed_positions.weight", "transformer.wpe.weight"},
                                        {"model.norm.weight", "transformer.ln_f.weight"},
                                        {"model.norm.bias", "transformer.ln_f.bias"}},
                                       "transformer.h.",
                                       {{".input_layernorm.", ".ln_1."},
                                        {".post_attention_layernorm.", ".ln_2."},
                                        {".self_attn.q_proj.", ".attn.c_attn."},
                                        {".self_attn.k_proj.", ".attn.c_attn."},
                                        {".self_attn.v_proj.", ".attn.c_attn."},
                                        {".self_attn.o_proj.", ".attn.c_proj."},
                                        {".mlp.up_proj.", ".mlp.c_fc."},
                                        {".mlp.down_proj.", ".mlp.c_proj."}}};
  return Rename(naming, name);
}

bool IsGptj(const ModelConfig& c) { return c.model_type == "gptj"; }

// GPT-J: the checkpoint's name of model tensor `name` (GPTJModel's transformer.*:
// wte, h.<i>.ln_1, attn.q/k/v/out_proj, mlp.fc_in/fc_out, ln_f; lm_head as it is).
std::string GptjCheckpointName(const std::string& name) {
  static const CheckpointNaming naming{{{"model.embed_tokens.weight", "transformer.wte.weight"},
                                        {"model.norm.weight", "transformer.ln_f.weight"},
                                        {"model.norm.bias", "transformer.ln_f.bias"}},
                                       "transformer.h.",
                                       {{".input_layernorm.", ".ln_1."},
                                        {".self_attn.o_proj.", ".attn.out_proj."},
                                        {".self_attn.", ".attn."},
                                        {".mlp.up_proj.", ".mlp.fc_in."},
                                        {".mlp.down_proj.", ".mlp.fc_out."}}};
  return Rename(naming, name);
}

bool IsGptBigCode(const ModelConfig& c) { return c.model_type == "gpt_bigcode"; }

// GPTBigCode (StarCoder, SantaCoder): GPT-2's names, its projections nn.Linear
// ([out, in], not Conv1D); q/k/v in attn.c_attn (GroupedQkvRows).
std::string GptBigCodeCheckpointName(const std::string& name) { return Gpt2CheckpointName(name); }

bool IsFalcon(const ModelConfig& c) { return c.model_type == "falcon"; }

// Falcon: the checkpoint's name of model tensor `name` (transformer.word_embeddings,
// h.<i>.input_layernorm, or ln_attn / ln_mlp for the two parallel norms, or
// post_attention_layernorm in a sequential layer; self_attention.query_key_value
// (q/k/v fused, GroupedQkvRows), self_attention.dense, mlp.dense_h_to_4h /
// dense_4h_to_h; ln_f; lm_head as it is).
std::string FalconCheckpointName(const ModelConfig& config, const std::string& name) {
  static const CheckpointNaming one_norm{{{"model.embed_tokens.weight", "transformer.word_embeddings.weight"},
                                          {"model.norm.weight", "transformer.ln_f.weight"},
                                          {"model.norm.bias", "transformer.ln_f.bias"}},
                                         "transformer.h.",
                                         {{".self_attn.q_proj.", ".self_attention.query_key_value."},
                                          {".self_attn.k_proj.", ".self_attention.query_key_value."},
                                          {".self_attn.v_proj.", ".self_attention.query_key_value."},
                                          {".self_attn.o_proj.", ".self_attention.dense."},
                                          {".mlp.up_proj.", ".mlp.dense_h_to_4h."},
                                          {".mlp.down_proj.", ".mlp.dense_4h_to_h."}}};
  static const CheckpointNaming two_norms = [] {
    CheckpointNaming n = one_norm;
    n.modules.push_back({".input_layernorm.", ".ln_attn."});
    n.modules.push_back({".post_attention_layernorm.", ".ln_mlp."});
    return n;
  }();
  return Rename(config.parallel_residual && !config.one_norm_per_layer ? two_norms : one_norm, name);
}

// The rows of a module fusing q, k and v by key/value head: per key/value head g,
// its G = heads / kv_heads query heads, then its key, then its value (Falcon's
// query_key_value, FalconAttention._split_heads viewing the output [.., kv_heads,
// G + 2, D]; GPTBigCode's c_attn: multi_query's one key/value head, q then k then v,
// and one per head, [q_h, k_h, v_h], are the two ends).
at::Tensor GroupedQkvRows(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, std::int64_t kv_heads) {
  std::vector<std::int64_t> group = {kv_heads, -1};
  group.insert(group.end(), q.sizes().begin() + 1, q.sizes().end());
  std::vector<std::int64_t> fused = q.sizes().vec();
  fused[0] += k.size(0) + v.size(0);
  return at::cat({q.reshape(group), k.reshape(group), v.reshape(group)}, 1).reshape(fused);
}

// The checkpoint layout of a family fusing q, k, v by key/value head
// (GroupedQkvRows; FuseProjections): the fused tensor, weight and bias, under the
// name `rename` gives q_proj's; every name by `rename`.
std::vector<std::pair<std::string, at::Tensor>> ToGroupedQkvLayout(const ModelConfig& config,
                                                                   std::vector<std::pair<std::string, at::Tensor>> tensors,
                                                                   const std::function<std::string(const std::string&)>& rename) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < tensors.size(); ++i) index[tensors[i].first] = i;
  std::vector<bool> drop(tensors.size(), false);
  for (std::int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    for (const char* kind : {"weight", "bias"}) {
      const std::string p = absl::StrCat("model.layers.", layer, ".self_attn.");
      const std::string q = absl::StrCat(p, "q_proj.", kind), k = absl::StrCat(p, "k_proj.", kind), v = absl::StrCat(p, "v_proj.", kind);
      if (!index.count(q) || !index.count(k) || !index.count(v)) continue;  // not all here: left apart
      at::Tensor& fused = tensors[index[q]].second;
      const at::Tensor &kt = tensors[index[k]].second, &vt = tensors[index[v]].second;
      if (fused.defined() && kt.defined() && vt.defined()) fused = GroupedQkvRows(fused, kt, vt, config.num_key_value_heads);
      drop[index[k]] = drop[index[v]] = true;
    }
  }
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!drop[i]) out.push_back({rename(tensors[i].first), std::move(tensors[i].second)});
  }
  return out;
}

// The model's names and one tensor per projection from such a checkpoint
// (SplitFusedProjections); a fused tensor of the wrong shape is an error naming it.
absl::Status FromGroupedQkvLayout(const ModelConfig& config, std::map<std::string, at::Tensor>* tensors,
                                  const std::function<std::string(const std::string&)>& rename) {
  const std::int64_t D = config.head_dim, KV = config.num_key_value_heads, G = config.num_attention_heads / KV;
  for (std::int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    for (const char* kind : {"weight", "bias"}) {
      const std::string ours = absl::StrCat("model.layers.", layer, ".self_attn.");
      const std::string name = rename(absl::StrCat(ours, "q_proj.", kind));
      auto it = tensors->find(name);
      if (it == tensors->end()) continue;  // FromTensors names what is missing
      std::vector<std::int64_t> shape = {KV * (G + 2) * D};
      if (std::string(kind) == "weight") shape.push_back(config.hidden_size);
      if (it->second.sizes().vec() != shape) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape ", ShapeText(it->second.sizes()),
                                                       ", config.json implies ", ShapeText(shape)));
      }
      std::vector<std::int64_t> grouped = {KV, (G + 2) * D};
      grouped.insert(grouped.end(), shape.begin() + 1, shape.end());
      const at::Tensor groups = it->second.reshape(grouped);
      tensors->erase(it);
      for (const auto& [module, first, rows] : {std::tuple{"q_proj.", std::int64_t{0}, G * D}, {"k_proj.", G * D, D}, {"v_proj.", (G + 1) * D, D}}) {
        std::vector<std::int64_t> one = shape;
        one[0] = KV * rows;
        (*tensors)[ours + module + kind] = groups.narrow(1, first, rows).reshape(one).clone();
      }
    }
  }
  for (const auto& [name, shape] : ExpectedTensors(config)) {
    const std::string theirs = rename(name);
    const bool fused = absl::StrContains(name, ".self_attn.q_proj.") || absl::StrContains(name, ".self_attn.k_proj.") ||
                       absl::StrContains(name, ".self_attn.v_proj.");
    if (theirs == name || fused) continue;
    if (auto it = tensors->find(theirs); it != tensors->end()) {
      (*tensors)[name] = it->second;
      tensors->erase(theirs);
    }
  }
  return absl::OkStatus();
}

bool IsGptNeo(const ModelConfig& c) { return c.model_type == "gpt_neo"; }

// GPT-Neo: the checkpoint's name of model tensor `name` (GPTNeoModel's transformer.*:
// wte, wpe, h.<i>.ln_1, attn.attention.q/k/v/out_proj, ln_2, mlp.c_fc/c_proj
// (nn.Linear, not GPT-2's Conv1D), ln_f; lm_head as it is).
std::string GptNeoCheckpointName(const std::string& name) {
  static const CheckpointNaming naming{{{"model.embed_tokens.weight", "transformer.wte.weight"},
                                        {"model.embed_positions.weight", "transformer.wpe.weight"},
                                        {"model.norm.weight", "transformer.ln_f.weight"},
                                        {"model.norm.bias", "transformer.ln_f.bias"}},
                                       "transformer.h.",
                                       {{".input_layernorm.", ".ln_1."},
                                        {".post_attention_layernorm.", ".ln_2."},
                                        {".self_attn.o_proj.", ".attn.attention.out_proj."},
                                        {".self_attn.", ".attn.attention."},
                                        {".mlp.up_proj.", ".mlp.c_fc."},
                                        {".mlp.down_proj.", ".mlp.c_proj."}}};
  return Rename(naming, name);
}

bool IsOpt(const ModelConfig& c) { return c.model_type == "opt"; }

// OPT: the checkpoint's name of model tensor `name` (one module per projection, as
// the model's; q_proj, k_proj and v_proj keep their names).
std::string OptCheckpointName(const std::string& name) {
  static const CheckpointNaming naming{{{"model.embed_tokens.weight", "model.decoder.embed_tokens.weight"},
                                        {"model.embed_positions.weight", "model.decoder.embed_positions.weight"},
                                        {"model.project_in.weight", "model.decoder.project_in.weight"},
                                        {"model.project_out.weight", "model.decoder.project_out.weight"},
                                        {"model.norm.weight", "model.decoder.final_layer_norm.weight"},
                                        {"model.norm.bias", "model.decoder.final_layer_norm.bias"}},
                                       "model.decoder.layers.",
                                       {{".input_layernorm.", ".self_attn_layer_norm."},
                                        {".post_attention_layernorm.", ".final_layer_norm."},
                                        {".self_attn.o_proj.", ".self_attn.out_proj."},
                                        {".mlp.up_proj.", ".fc1."},
                                        {".mlp.down_proj.", ".fc2."}}};
  return Rename(naming, name);
}

bool IsPhi(const ModelConfig& c) { return c.model_type == "phi"; }

// Phi: the checkpoint's name of model tensor `name` (one module per projection;
// o_proj is self_attn.dense, up/down mlp.fc1/fc2, the final norm final_layernorm).
std::string PhiCheckpointName(const std::string& name) {
  static const CheckpointNaming naming{{{"model.norm.weight", "model.final_layernorm.weight"},
                                        {"model.norm.bias", "model.final_layernorm.bias"}},
                                       "model.layers.",
                                       {{".self_attn.o_proj.", ".self_attn.dense."},
                                        {".self_attn.q_norm.", ".self_attn.q_layernorm."},
                                        {".self_attn.k_norm.", ".self_attn.k_layernorm."},
                                        {".mlp.up_proj.", ".mlp.fc1."},
                                        {".mlp.down_proj.", ".mlp.fc2."}}};
  return Rename(naming, name);
}

bool IsStableLm(const ModelConfig& c) { return c.model_type == "stablelm"; }

// StableLM: Llama's names but for its per-head q/k norms, one LayerNorm per head
// (self_attn.q_layernorm.norms.<h>.weight): named here for all heads at once.
std::string StableLmCheckpointName(const ModelConfig& config, const std::string& name) {
  for (const auto& [ours, theirs, heads] : {std::tuple{".self_attn.q_norm.weight", ".self_attn.q_layernorm.norms.", config.num_attention_heads},
                                           std::tuple{".self_attn.k_norm.weight", ".self_attn.k_layernorm.norms.", config.num_key_value_heads}}) {
    if (absl::EndsWith(name, ours)) {
      return absl::StrCat(name.substr(0, name.size() - std::strlen(ours)), theirs, "{0..", heads - 1, "}.weight");
    }
  }
  return name;
}

// StableLM's per-head norm weights from the model's [heads, head_dim] rows (FuseProjections).
std::vector<std::pair<std::string, at::Tensor>> ToStableLmLayout(const ModelConfig& config,
                                                                 std::vector<std::pair<std::string, at::Tensor>> tensors) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& [name, t] : tensors) {
    const std::string theirs = StableLmCheckpointName(config, name);
    if (theirs == name || !t.defined()) {  // not a q/k norm, or a name's translation only
      out.push_back({theirs, std::move(t)});
      continue;
    }
    const std::string stem = theirs.substr(0, theirs.find("{0.."));
    for (std::int64_t h = 0; h < t.size(0); ++h) out.push_back({absl::StrCat(stem, h, ".weight"), t[h]});
  }
  return out;
}

// The model's [heads, head_dim] q/k norm weights from StableLM's per-head ones
// (SplitFusedProjections); a set with some heads missing is an error naming one.
absl::Status FromStableLmLayout(const ModelConfig& config, std::map<std::string, at::Tensor>* tensors) {
  if (!config.qk_layer_norm) return absl::OkStatus();
  for (std::int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    for (const auto& [ours, heads] : {std::pair{"q_norm", config.num_attention_heads}, std::pair{"k_norm", config.num_key_value_heads}}) {
      const std::string name = absl::StrCat("model.layers.", layer, ".self_attn.", ours, ".weight");
      const std::string theirs = StableLmCheckpointName(config, name);
      const std::string stem = theirs.substr(0, theirs.find("{0.."));
      std::vector<at::Tensor> rows;
      for (std::int64_t h = 0; h < heads; ++h) {
        auto it = tensors->find(absl::StrCat(stem, h, ".weight"));
        if (it != tensors->end()) rows.push_back(it->second);
      }
      if (rows.empty()) continue;  // FromTensors names what is missing
      for (std::int64_t h = 0; h < heads; ++h) {
        const std::string one = absl::StrCat(stem, h, ".weight");
        auto it = tensors->find(one);
        if (it == tensors->end()) return absl::InvalidArgumentError(absl::StrCat("checkpoint lacks tensor '", one, "'"));
        if (it->second.dim() != 1 || it->second.size(0) != config.head_dim) {
          return absl::InvalidArgumentError(absl::StrCat("tensor '", one, "' has shape ", ShapeText(it->second.sizes()),
                                                         ", config.json implies [", config.head_dim, "]"));
        }
        tensors->erase(it);
      }
      (*tensors)[name] = at::stack(rows);
    }
  }
  return absl::OkStatus();
}

bool IsStarcoder2(const ModelConfig& c) { return c.model_type == "starcoder2"; }

// StarCoder2: Llama's names but for its MLP, mlp.c_fc and mlp.c_proj (nn.Linear).
std::string Starcoder2CheckpointName(const std::string& name) {
  static const CheckpointNaming naming{{}, "model.layers.", {{".mlp.up_proj.", ".mlp.c_fc."}, {".mlp.down_proj.", ".mlp.c_proj."}}};
  return Rename(naming, name);
}

bool IsMamba(const ModelConfig& c) { return c.mamba; }

// Mamba, FalconMamba: the checkpoint's name of model tensor `name` (backbone.*; each
// layer's norm is norm, the final one norm_f; the mixer's tensors keep their names).
std::string MambaCheckpointName(const std::string& name) {
  static const CheckpointNaming naming{{{"model.embed_tokens.weight", "backbone.embeddings.weight"},
                                        {"model.norm.weight", "backbone.norm_f.weight"}},
                                       "backbone.layers.",
                                       {{".input_layernorm.", ".norm."}}};
  return Rename(naming, name);
}

bool IsDbrx(const ModelConfig& c) { return c.dbrx; }

// DBRX: the checkpoint's name of model tensor `name` (q/k/v: their fused
// norm_attn_norm.attn.Wqkv; expert e's gate/up/down: the fused ffn.experts.mlp.w1/v1/w2).
std::string DbrxCheckpointName(const std::string& name) {
  static const CheckpointNaming naming{{{"model.embed_tokens.weight", "transformer.wte.weight"},
                                        {"model.norm.weight", "transformer.norm_f.weight"}},
                                       "transformer.blocks.",
                                       {{".input_layernorm.", ".norm_attn_norm.norm_1."},
                                        {".post_attention_layernorm.", ".norm_attn_norm.norm_2."},
                                        {".self_attn.q_proj.", ".norm_attn_norm.attn.Wqkv."},
                                        {".self_attn.k_proj.", ".norm_attn_norm.attn.Wqkv."},
                                        {".self_attn.v_proj.", ".norm_attn_norm.attn.Wqkv."},
                                        {".self_attn.o_proj.", ".norm_attn_norm.attn.out_proj."},
                                        {".mlp.gate.", ".ffn.router.layer."}}};
  const std::string renamed = Rename(naming, name);
  // transformer.blocks.<i>.mlp.experts.<e>.{gate,up,down}_proj.weight → .ffn.experts.mlp.{w1,v1,w2}
  const size_t experts = renamed.find(".mlp.experts.");
  if (experts == std::string::npos) return renamed;
  for (const auto& [ours, theirs] : {std::pair{".gate_proj.weight", ".ffn.experts.mlp.w1"}, {".up_proj.weight", ".ffn.experts.mlp.v1"},
                                     {".down_proj.weight", ".ffn.experts.mlp.w2"}}) {
    if (absl::EndsWith(renamed, ours)) return renamed.substr(0, experts) + theirs;
  }
  return renamed;
}

// DBRX's checkpoint layout from the model's tensors (FuseProjections): q, k, v rows
// concatenated into Wqkv; each layer's experts' gate and up matrices stacked by rows
// into w1 and v1 [E · I, H], their down matrices transposed and stacked into w2
// (DbrxExpertGLU computes (act(x w1_eᵀ) · x v1_eᵀ) w2_e). A set not all here, or
// with an undefined tensor (a name's translation only), gives its fused name with an
// undefined tensor.
std::vector<std::pair<std::string, at::Tensor>> ToDbrxLayout(const ModelConfig& config,
                                                             std::vector<std::pair<std::string, at::Tensor>> tensors) {
  std::map<std::string, std::vector<at::Tensor>> fused;  // the fused tensor's name → its parts, in order
  std::vector<std::string> order;                        // first appearance
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::map<std::string, size_t> slot;  // fused name → its place in out
  auto part_index = [&](const std::string& name) -> std::int64_t {
    // q, k, v: 0, 1, 2; expert e: e.
    if (absl::StrContains(name, ".self_attn.q_proj.")) return 0;
    if (absl::StrContains(name, ".self_attn.k_proj.")) return 1;
    if (absl::StrContains(name, ".self_attn.v_proj.")) return 2;
    const size_t at = name.find(".mlp.experts.");
    std::int64_t e = -1;
    if (at == std::string::npos) return -1;
    const size_t begin = at + std::strlen(".mlp.experts."), end = name.find('.', begin);
    if (end == std::string::npos || !absl::SimpleAtoi(absl::string_view(name).substr(begin, end - begin), &e)) return -1;
    return e;
  };
  for (auto& [name, t] : tensors) {
    const std::string theirs = DbrxCheckpointName(name);
    const std::int64_t part = part_index(name);
    if (part < 0) {
      out.push_back({theirs, std::move(t)});
      continue;
    }
    auto [it, fresh] = fused.try_emplace(theirs);
    const size_t parts = absl::StrContains(theirs, ".Wqkv.") ? 3 : static_cast<size_t>(config.num_experts);
    if (fresh) {
      it->second.resize(parts);
      slot[theirs] = out.size();
      out.push_back({theirs, at::Tensor()});
    }
    if (part < static_cast<std::int64_t>(parts)) {
      it->second[static_cast<size_t>(part)] = absl::EndsWith(theirs, ".w2") && t.defined() ? t.t() : t;
    }
  }
  for (auto& [name, parts] : fused) {
    bool whole = true;
    for (const at::Tensor& t : parts) whole = whole && t.defined();
    if (whole) out[slot[name]].second = at::cat(parts, 0);
  }
  return out;
}

absl::Status FromRenamedLayout(const ModelConfig& config, std::map<std::string, at::Tensor>* tensors,
                               std::string (*rename)(const std::string&));

// The model's names and one tensor per projection and expert from a DBRX checkpoint
// (SplitFusedProjections); a fused tensor of the wrong shape is an error naming it.
absl::Status FromDbrxLayout(const ModelConfig& config, std::map<std::string, at::Tensor>* tensors) {
  const std::int64_t H = config.hidden_size, q = config.num_attention_heads * config.head_dim;
  const std::int64_t kv = config.num_key_value_heads * config.head_dim, E = config.num_experts, I = config.moe_intermediate_size;
  auto take = [&](const std::string& name, const std::vector<std::int64_t>& shape) -> absl::StatusOr<at::Tensor> {
    auto it = tensors->find(name);
    if (it == tensors->end()) return at::Tensor();  // FromTensors names what is missing
    if (it->second.sizes().vec() != shape) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape ", ShapeText(it->second.sizes()),
                                                     ", config.json implies ", ShapeText(shape)));
    }
    at::Tensor t = it->second;
    tensors->erase(it);
    return t;
  };
  for (std::int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    const std::string ours = absl::StrCat("model.layers.", layer, ".");
    const std::string block = absl::StrCat("transformer.blocks.", layer, ".");
    POSTTRAIN_ASSIGN_OR_RETURN(const at::Tensor qkv, take(block + "norm_attn_norm.attn.Wqkv.weight", {q + 2 * kv, H}));
    if (qkv.defined()) {
      const std::vector<at::Tensor> parts = qkv.split_with_sizes({q, kv, kv}, 0);
      for (const auto& [k, module] : {std::pair{0, "q_proj"}, {1, "k_proj"}, {2, "v_proj"}}) {
        (*tensors)[absl::StrCat(ours, "self_attn.", module, ".weight")] = parts[static_cast<size_t>(k)].clone();
      }
    }
    for (const char* which : {"w1", "v1", "w2"}) {
      POSTTRAIN_ASSIGN_OR_RETURN(const at::Tensor fused, take(absl::StrCat(block, "ffn.experts.mlp.", which), {E * I, H}));
      if (!fused.defined()) continue;
      for (std::int64_t e = 0; e < E; ++e) {
        const ExpertNames names = ExpertWeightNames(config, layer, e);
        const at::Tensor rows = fused.narrow(0, e * I, I);
        const std::string w = which;
        (*tensors)[w == "w1" ? names.gate : w == "v1" ? names.up : names.down] = w == "w2" ? rows.t().contiguous() : rows.clone();
      }
    }
  }
  return FromRenamedLayout(config, tensors, DbrxCheckpointName);
}

// OPT's, Phi's, StarCoder2's or Mamba's checkpoint names from the model's (FuseProjections): renamed only.
std::vector<std::pair<std::string, at::Tensor>> ToRenamedLayout(std::vector<std::pair<std::string, at::Tensor>> tensors,
                                                                std::string (*rename)(const std::string&)) {
  for (auto& [name, t] : tensors) name = rename(name);
  return tensors;
}

// The model's names from an OPT or Phi checkpoint's (SplitFusedProjections).
absl::Status FromRenamedLayout(const ModelConfig& config, std::map<std::string, at::Tensor>* tensors,
                               std::string (*rename)(const std::string&)) {
  for (const auto& [name, shape] : ExpectedTensors(config)) {
    const std::string theirs = rename(name);
    if (theirs == name) continue;
    if (auto it = tensors->find(theirs); it != tensors->end()) {
      (*tensors)[name] = it->second;
      tensors->erase(it);
    }
  }
  return absl::OkStatus();
}

// Whether model tensor `name` is a projection's weight: GPT-2 stores those
// transposed (Conv1D, [in, out]).
bool IsProjectionWeight(const std::string& name) {
  return absl::StartsWith(name, "model.layers.") && absl::EndsWith(name, "_proj.weight");
}

// The shape of the checkpoint tensor that holds model tensor `name` of `shape`
// (for messages): the fused q/k/v tensor's, GPT-2's transposed projections.
std::vector<std::int64_t> CheckpointShapeOf(const ModelConfig& config, const std::string& name, std::vector<std::int64_t> shape) {
  const std::string theirs = CheckpointNameOf(config, name);
  if (absl::StrContains(theirs, "query_key_value") || absl::StrContains(theirs, ".c_attn.")) shape[0] *= 3;
  if (IsFalcon(config) && absl::StrContains(theirs, "query_key_value")) {
    shape[0] = (config.num_attention_heads + 2 * config.num_key_value_heads) * config.head_dim;
  }
  if (IsGptBigCode(config) && absl::StrContains(theirs, ".c_attn.")) {
    shape[0] = (config.num_attention_heads + 2 * config.num_key_value_heads) * config.head_dim;
  }
  if (absl::StrContains(theirs, ".Wqkv.")) {
    shape[0] = (config.num_attention_heads + 2 * config.num_key_value_heads) * config.head_dim;
  }
  if (absl::StrContains(theirs, ".ffn.experts.mlp.")) shape = {config.num_experts * config.moe_intermediate_size, config.hidden_size};
  if (IsGpt2(config) && IsProjectionWeight(name)) std::reverse(shape.begin(), shape.end());
  return shape;
}

// GPT-2's checkpoint layout from the model's tensors (FuseProjections). Undefined
// tensors pass as they are (a name's translation only).
std::vector<std::pair<std::string, at::Tensor>> ToGpt2Layout(const ModelConfig& config,
                                                             std::vector<std::pair<std::string, at::Tensor>> tensors) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < tensors.size(); ++i) index[tensors[i].first] = i;
  std::vector<bool> drop(tensors.size(), false);
  for (std::int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    for (const char* kind : {"weight", "bias"}) {
      const std::string p = absl::StrCat("model.layers.", layer, ".self_attn.");
      const std::string q = absl::StrCat(p, "q_proj.", kind), k = absl::StrCat(p, "k_proj.", kind), v = absl::StrCat(p, "v_proj.", kind);
      if (!index.count(q) || !index.count(k) || !index.count(v)) continue;  // not all here: left apart
      tensors[index[q]].second = at::cat({tensors[index[q]].second, tensors[index[k]].second, tensors[index[v]].second}, 0);
      drop[index[k]] = drop[index[v]] = true;
    }
  }
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (drop[i]) continue;
    at::Tensor t = std::move(tensors[i].second);
    if (t.defined() && IsProjectionWeight(tensors[i].first)) t = t.t().contiguous();  // Conv1D: [in, out]
    out.push_back({Gpt2CheckpointName(tensors[i].first), std::move(t)});
  }
  return out;
}

// The model's names and layout from a GPT-2 checkpoint (SplitFusedProjections).
absl::Status FromGpt2Layout(const ModelConfig& config, std::map<std::string, at::Tensor>* tensors) {
  // The oldest checkpoints (the hub's gpt2) name the tensors without transformer.
  POSTTRAIN_RETURN_IF_ERROR(AddMissingPrefix(
      "transformer.",
      [](const std::string& name) {
        return absl::StartsWith(name, "h.") || absl::StartsWith(name, "ln_f.") || name == "wte.weight" || name == "wpe.weight";
      },
      tensors));
  auto check = [&](const std::string& name, const at::Tensor& t, const std::vector<std::int64_t>& shape) {
    if (t.sizes().vec() == shape) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape ", ShapeText(t.sizes()),
                                                   ", config.json implies ", ShapeText(shape)));
  };
  const std::int64_t q_dim = config.num_attention_heads * config.head_dim;
  for (std::int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    const std::string p = absl::StrCat("transformer.h.", layer, ".attn.");
    tensors->erase(p + "bias");         // old checkpoints' causal-mask buffer
    tensors->erase(p + "masked_bias");  // and its fill value
    for (const char* kind : {"weight", "bias"}) {
      const std::string name = absl::StrCat(p, "c_attn.", kind);
      auto it = tensors->find(name);
      if (it == tensors->end()) continue;  // FromTensors names what is missing
      const bool weight = std::string(kind) == "weight";
      POSTTRAIN_RETURN_IF_ERROR(check(name, it->second, weight ? std::vector<std::int64_t>{config.hidden_size, 3 * q_dim}
                                                               : std::vector<std::int64_t>{3 * q_dim}));
      const at::Tensor qkv = weight ? it->second.t() : it->second;  // rows q, then k, then v
      tensors->erase(it);
      const std::string ours = absl::StrCat("model.layers.", layer, ".self_attn.");
      for (const auto& [part, module] : {std::pair{0, "q_proj."}, {1, "k_proj."}, {2, "v_proj."}}) {
        (*tensors)[ours + module + kind] = qkv.narrow(0, part * q_dim, q_dim).contiguous();
      }
    }
  }
  for (const auto& [name, shape] : ExpectedTensors(config)) {
    const std::string theirs = Gpt2CheckpointName(name);
    if (theirs == name || absl::StrContains(theirs, ".c_attn.")) continue;
    auto it = tensors->find(theirs);
    if (it == tensors->end()) continue;
    at::Tensor t = it->second;
    if (IsProjectionWeight(name)) {  // Conv1D [in, out]
      POSTTRAIN_RETURN_IF_ERROR(check(theirs, t, {shape[1], shape[0]}));
      t = t.t().contiguous();
    }
    tensors->erase(it);
    (*tensors)[name] = t;
  }
  return absl::OkStatus();
}

// The model's names and one tensor per projection from a GPT-NeoX or BLOOM checkpoint
// (SplitFusedProjections): query_key_value is grouped by head, [q_h, k_h, v_h]
// (FromGroupedQkvLayout with one key/value head per head); old checkpoints'
// attention buffers are dropped. Their layout out: ToGroupedQkvLayout.
absl::Status FromHeadInterleavedLayout(const ModelConfig& config, std::map<std::string, at::Tensor>* tensors,
                                       std::string (*rename)(const std::string&)) {
  for (std::int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    const std::string fused = rename(absl::StrCat("model.layers.", layer, ".self_attn.q_proj.weight"));
    const std::string p = fused.substr(0, fused.size() - std::strlen("query_key_value.weight"));  // the attention module's
    tensors->erase(p + "bias");         // old checkpoints' causal-mask buffer
    tensors->erase(p + "masked_bias");  // and its fill value
  }
  return FromGroupedQkvLayout(config, tensors, rename);
}

}  // namespace

std::string CheckpointNameOf(const ModelConfig& config, const std::string& name) {
  return IsNeox(config)    ? NeoxCheckpointName(name)
         : IsBloom(config) ? BloomCheckpointName(name)
         : IsGpt2(config) ? Gpt2CheckpointName(name)
         : IsGptj(config) ? GptjCheckpointName(name)
         : IsGptNeo(config) ? GptNeoCheckpointName(name)
         : IsGptBigCode(config) ? GptBigCodeCheckpointName(name)
         : IsFalcon(config) ? FalconCheckpointName(config, name)
         : IsOpt(config)  ? OptCheckpointName(name)
         : IsPhi(config)  ? PhiCheckpointName(name)
         : IsStableLm(config) ? StableLmCheckpointName(config, name)
         : IsStarcoder2(config) ? Starcoder2CheckpointName(name)
         : IsMamba(config)      ? MambaCheckpointName(name)
         : IsDbrx(config)       ? DbrxCheckpointName(name)
                          : name;
}

std::vector<std::pair<std::string, at::Tensor>> FuseProjections(const ModelConfig& config,
                                                                 std::vector<std::pair<std::string, at::Tensor>> tensors) {
  if (IsNeox(config)) return ToGroupedQkvLayout(config, std::move(tensors), NeoxCheckpointName);  // by head
  if (IsBloom(config)) return ToGroupedQkvLayout(config, std::move(tensors), BloomCheckpointName);
  if (IsGpt2(config)) return ToGpt2Layout(config, std::move(tensors));
  if (IsGptj(config)) return ToRenamedLayout(std::move(tensors), GptjCheckpointName);
  if (IsGptNeo(config)) return ToRenamedLayout(std::move(tensors), GptNeoCheckpointName);
  if (IsGptBigCode(config)) return ToGroupedQkvLayout(config, std::move(tensors), GptBigCodeCheckpointName);
  if (IsFalcon(config)) {
    return ToGroupedQkvLayout(config, std::move(tensors), [&](const std::string& n) { return FalconCheckpointName(config, n); });
  }
  if (IsOpt(config)) return ToRenamedLayout(std::move(tensors), OptCheckpointName);
  if (IsPhi(config)) return ToRenamedLayout(std::move(tensors), PhiCheckpointName);
  if (IsStableLm(config)) return ToStableLmLayout(config, std::move(tensors));
  if (IsStarcoder2(config)) return ToRenamedLayout(std::move(tensors), Starcoder2CheckpointName);
  if (IsMamba(config)) return ToRenamedLayout(std::move(tensors), MambaCheckpointName);
  if (IsDbrx(config)) return ToDbrxLayout(config, std::move(tensors));
  const std::vector<FusedTensor> fused = FusedTensors(config);
  if (fused.empty()) return tensors;
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < tensors.size(); ++i) index[tensors[i].first] = i;
  std::vector<bool> drop(tensors.size(), false);
  for (const FusedTensor& f : fused) {
    std::vector<at::Tensor> parts;
    for (const std::string& part : f.parts) {
      if (auto it = index.find(part); it != index.end()) parts.push_back(tensors[it->second].second);
    }
    if (parts.size() != f.parts.size()) continue;  // not all here: left apart
    const size_t first = index.at(f.parts[0]);
    tensors[first] = {f.name, at::cat(parts, 0)};
    for (size_t k = 1; k < f.parts.size(); ++k) drop[index.at(f.parts[k])] = true;
  }
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!drop[i]) out.push_back(std::move(tensors[i]));
  }
  return out;
}

absl::Status SplitFusedProjections(const ModelConfig& config, std::map<std::string, at::Tensor>* tensors) {
  if (IsNeox(config)) return FromHeadInterleavedLayout(config, tensors, NeoxCheckpointName);
  if (IsBloom(config)) {  // BloomModel's own files (the hub's bloom-560m) name the tensors without transformer.
    POSTTRAIN_RETURN_IF_ERROR(AddMissingPrefix(
        "transformer.",
        [](const std::string& name) {
          return absl::StartsWith(name, "h.") || absl::StartsWith(name, "ln_f.") || absl::StartsWith(name, "word_embeddings");
        },
        tensors));
    return FromHeadInterleavedLayout(config, tensors, BloomCheckpointName);
  }
  if (IsGpt2(config)) return FromGpt2Layout(config, tensors);
  if (IsGptj(config)) {
    for (std::int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {  // old checkpoints' mask buffers
      tensors->erase(absl::StrCat("transformer.h.", layer, ".attn.bias"));
      tensors->erase(absl::StrCat("transformer.h.", layer, ".attn.masked_bias"));
    }
    return FromRenamedLayout(config, tensors, GptjCheckpointName);
  }
  if (IsGptBigCode(config)) {
    tensors->erase("transformer.bias");  // an old causal-mask buffer
    return FromGroupedQkvLayout(config, tensors, GptBigCodeCheckpointName);
  }
  if (IsFalcon(config)) {
    return FromGroupedQkvLayout(config, tensors, [&](const std::string& n) { return FalconCheckpointName(config, n); });
  }
  if (IsGptNeo(config)) {
    for (std::int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {  // old checkpoints' mask buffers
      tensors->erase(absl::StrCat("transformer.h.", layer, ".attn.attention.bias"));
      tensors->erase(absl::StrCat("transformer.h.", layer, ".attn.attention.masked_bias"));
    }
    return FromRenamedLayout(config, tensors, GptNeoCheckpointName);
  }
  if (IsOpt(config)) {  // with or without OPTForCausalLM's model. prefix (OPTModel's own files)
    POSTTRAIN_RETURN_IF_ERROR(
        AddMissingPrefix("model.", [](const std::string& name) { return absl::StartsWith(name, "decoder."); }, tensors));
    return FromRenamedLayout(config, tensors, OptCheckpointName);
  }
  if (IsPhi(config)) return FromRenamedLayout(config, tensors, PhiCheckpointName);
  if (IsStableLm(config)) return FromStableLmLayout(config, tensors);
  if (IsStarcoder2(config)) return FromRenamedLayout(config, tensors, Starcoder2CheckpointName);
  if (IsMamba(config)) return FromRenamedLayout(config, tensors, MambaCheckpointName);
  if (IsDbrx(config)) return FromDbrxLayout(config, tensors);
  for (const FusedTensor& f : FusedTensors(config)) {
    auto it = tensors->find(f.name);
    if (it == tensors->end()) continue;  // absent: the parts may be there by their own names
    const std::vector<std::int64_t> shape = {f.total_rows(), config.hidden_size};
    if (it->second.sizes().vec() != shape) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", f.name, "' has shape ", ShapeText(it->second.sizes()),
                                                     ", config.json implies ", ShapeText(shape)));
    }
    // Copies, not views: each projection owns its storage (sharding frees them one by one).
    const std::vector<at::Tensor> parts = it->second.split_with_sizes(f.rows, 0);
    for (size_t k = 0; k < parts.size(); ++k) (*tensors)[f.parts[k]] = parts[k].clone();
    tensors->erase(f.name);
  }
  // transformers 5 holds an MoE layer's experts as two 3-D parameters, under
  // mlp. for Mixtral too: experts.gate_up_proj [E, 2I, H] (gate rows, then up) and
  // experts.down_proj [E, H, I]. Checkpoints in that layout become one tensor per
  // expert, as the hub's are.
  for (std::int64_t layer = 0; layer < config.num_hidden_layers && !config.gpt_oss; ++layer) {  // GPT-OSS: its own layout
    if (!config.is_moe_layer(layer)) continue;
    const std::string v5 = absl::StrCat("model.layers.", layer, ".mlp.");
    const std::string router = absl::StrCat("model.layers.", layer, ".", config.moe_module(), ".gate.weight");
    if (v5 + "gate.weight" != router && tensors->count(v5 + "gate.weight") && !tensors->count(router)) {
      (*tensors)[router] = (*tensors)[v5 + "gate.weight"];
      tensors->erase(v5 + "gate.weight");
    }
    const std::int64_t E = config.num_experts, I = config.moe_intermediate_size, H = config.hidden_size;
    for (const auto& [name, shape] : {std::pair{v5 + "experts.gate_up_proj", std::vector<std::int64_t>{E, 2 * I, H}},
                                      std::pair{v5 + "experts.down_proj", std::vector<std::int64_t>{E, H, I}}}) {
      auto it = tensors->find(name);
      if (it == tensors->end()) continue;
      if (it->second.sizes().vec() != shape) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape ", ShapeText(it->second.sizes()),
                                                       ", config.json implies ", ShapeText(shape)));
      }
      const bool gate_up = absl::EndsWith(name, "gate_up_proj");
      for (std::int64_t e = 0; e < E; ++e) {
        const ExpertNames names = ExpertWeightNames(config, layer, e);
        const at::Tensor expert = it->second.select(0, e);
        if (gate_up) {
          (*tensors)[names.gate] = expert.narrow(0, 0, I).clone();
          (*tensors)[names.up] = expert.narrow(0, I, I).clone();
        } else {
          (*tensors)[names.down] = expert.clone();
        }
      }
      tensors->erase(name);
    }
  }
  return absl::OkStatus();
}

CausalLM::CausalLM(ModelConfig config, at::ScalarType dtype)
    : config_(std::move(config)), dtype_(dtype) {
  if (config_.alibi) {
    // transformers' build_alibi_tensor: n the largest power of two <= heads, slopes
    // (2^(-8/n))^i for i = 1..n, then (2^(-8/2n))^i for the odd i < 2 (heads - n), in fp32.
    const std::int64_t heads = config_.num_attention_heads;
    std::int64_t n = 1;
    while (n * 2 <= heads) n *= 2;
    auto powers = [&](double base, std::int64_t first, std::int64_t count, std::int64_t step) {
      const at::Tensor exponents = at::arange(first, first + step * count, step, HostOptions(at::kInt));
      return at::pow(at::scalar_tensor(base, HostOptions(at::kFloat)), exponents);
    };
    alibi_slopes_ = powers(std::pow(2.0, -8.0 / static_cast<double>(n)), 1, n, 1);
    if (n != heads) {
      alibi_slopes_ = at::cat({alibi_slopes_, powers(std::pow(2.0, -8.0 / static_cast<double>(2 * n)), 1,
                                                      std::min(n, heads - n), 2)});
    }
  }
  // inv_freq_i = theta^(-2i/d), i < d/2, in fp32 as transformers computes it, over
  // the d = rotary_dim dimensions RoPE rotates (head_dim but for partial rotary; an
  // odd d of GLM-4.5's or Phi-3's: ceil(d/2) frequencies rotate d + 1 dimensions).
  const std::int64_t d = config_.rope_freq_dim();
  at::Tensor exponent = at::arange(0, d, 2, HostOptions(at::kLong)).to(ComputeDtype(dtype_)) / static_cast<double>(d);
  inv_freq_ = 1.0 / at::pow(config_.rope_theta, exponent);
  // Gemma 3's windowed layers: their own base, never scaled.
  if (config_.local_rope_theta) local_inv_freq_ = 1.0 / at::pow(*config_.local_rope_theta, exponent);
  if (config_.rope_scaling && config_.rope_scaling->rope_type == "linear") {
    inv_freq_ = inv_freq_ / config_.rope_scaling->factor;  // position p rotates as p / factor
  } else if (config_.rope_scaling && config_.rope_scaling->rope_type == "longrope") {
    // transformers' _compute_longrope_parameters: each frequency divided by its
    // short (or, past the original context, long) factor; cos/sin scaled.
    const RopeScaling& s = *config_.rope_scaling;
    const at::Tensor base = inv_freq_;
    inv_freq_ = base / at::tensor(s.short_factor, HostOptions(at::kDouble)).to(base.scalar_type());
    long_inv_freq_ = base / at::tensor(s.long_factor, HostOptions(at::kDouble)).to(base.scalar_type());
    rope_attention_scaling_ = s.attention_factor;
  } else if (config_.rope_scaling && config_.rope_scaling->rope_type == "yarn") {
    // transformers' _compute_yarn_parameters, in its fp32 tensor arithmetic: the
    // dimensions [low, high] that turn between beta_fast and beta_slow times within
    // the original context, a linear ramp across them from extrapolation (θ_i) to
    // interpolation (θ_i / factor); cos and sin times the attention factor.
    const RopeScaling& s = *config_.rope_scaling;
    const double original = static_cast<double>(s.original_max_position_embeddings > 0 ? s.original_max_position_embeddings
                                                                                      : config_.max_position_embeddings);
    const double dims = static_cast<double>(d);
    constexpr double kPi = 3.14159265358979323846;
    auto correction_dim = [&](double rotations) {
      return dims * std::log(original / (rotations * 2 * kPi)) / (2 * std::log(config_.rope_theta));
    };
    double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
    if (s.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, dims - 1);
    if (low == high) high += 0.001;  // as transformers: no division by zero
    const at::Tensor ramp = at::clamp((at::arange(d / 2, inv_freq_.options()) - low) / (high - low), 0, 1);
    const at::Tensor extrapolation = 1 - ramp;
    const at::Tensor pos_freqs = at::pow(config_.rope_theta, exponent);
    inv_freq_ = 1.0 / (s.factor * pos_freqs) * (1 - extrapolation) + inv_freq_ * extrapolation;
    rope_attention_scaling_ = s.attention_factor;
  } else if (config_.rope_scaling && config_.rope_scaling->rope_type == "dynamic") {
    rope_exponent_ = exponent;  // the base changes with a forward's length (GlobalInvFreq)
  } else if (config_.rope_scaling) {
    // Llama 3.1 frequency scaling (transformers' _compute_llama3_parameters).
    const RopeScaling& s = *config_.rope_scaling;
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    constexpr double kPi = 3.14159265358979323846;
    at::Tensor wavelen = 2 * kPi / inv_freq_;
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq_ / s.factor, inv_freq_);
    at::Tensor smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    at::Tensor medium = at::logical_not(wavelen < high_wavelen) & at::logical_not(wavelen > low_wavelen);
    inv_freq_ = at::where(medium, smoothed, scaled);
  }
}

void CausalLM::Index() {
  std::map<std::string, at::Tensor> by_name(params_.begin(), params_.end());
  embed_ = by_name.at("model.embed_tokens.weight");
  final_norm_ = config_.post_layer_norm || config_.norm_without_parameters ? at::Tensor() : by_name.at("model.norm.weight");
  final_norm_bias_ = config_.layer_norm && config_.layer_norm_bias && !config_.post_layer_norm ? by_name.at("model.norm.bias")
                                                                                               : at::Tensor();
  project_in_ = config_.word_embed_proj_dim > 0 ? by_name.at("model.project_in.weight") : at::Tensor();
  project_out_ = config_.word_embed_proj_dim > 0 ? by_name.at("model.project_out.weight") : at::Tensor();
  lm_head_ = config_.tie_word_embeddings ? embed_ : by_name.at("lm_head.weight");
  lm_head_bias_ = config_.lm_head_bias ? by_name.at("lm_head.bias") : at::Tensor();
  positions_ = config_.learned_positions ? by_name.at("model.embed_positions.weight") : at::Tensor();
  embed_norm_ = config_.embedding_layer_norm ? by_name.at("model.embed_norm.weight") : at::Tensor();
  embed_norm_bias_ = config_.embedding_layer_norm ? by_name.at("model.embed_norm.bias") : at::Tensor();
  layers_.clear();
  for (std::int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    Layer l;
    if (config_.mamba) {
      const std::string m = p + "mixer.";
      l.input_norm = by_name.at(p + "input_layernorm.weight");
      l.in_proj = by_name.at(m + "in_proj.weight");
      if (config_.mamba_use_bias) l.in_proj_bias = by_name.at(m + "in_proj.bias");
      l.conv_w = by_name.at(m + "conv1d.weight");
      if (config_.use_conv_bias) l.conv_b = by_name.at(m + "conv1d.bias");
      l.x_proj = by_name.at(m + "x_proj.weight");
      l.dt_proj = by_name.at(m + "dt_proj.weight");
      l.dt_bias = by_name.at(m + "dt_proj.bias");
      l.a_log = by_name.at(m + "A_log");
      l.d_skip = by_name.at(m + "D");
      l.out_proj = by_name.at(m + "out_proj.weight");
      if (config_.mamba_use_bias) l.out_proj_bias = by_name.at(m + "out_proj.bias");
      layers_.push_back(std::move(l));
      continue;
    }
    if (config_.pre_norms && !config_.norm_without_parameters) l.input_norm = by_name.at(p + "input_layernorm.weight");
    if (config_.pre_norms && config_.layer_norm && config_.layer_norm_bias) l.input_norm_bias = by_name.at(p + "input_layernorm.bias");
    if (config_.mla()) {
      if (config_.q_lora_rank > 0) {
        l.q_a = by_name.at(p + "self_attn.q_a_proj.weight");
        if (config_.attention_bias) l.q_a_bias = by_name.at(p + "self_attn.q_a_proj.bias");
        l.q_a_norm = by_name.at(p + "self_attn.q_a_layernorm.weight");
        l.q = by_name.at(p + "self_attn.q_b_proj.weight");
      } else {
        l.q = by_name.at(p + "self_attn.q_proj.weight");
      }
      l.kv_a = by_name.at(p + "self_attn.kv_a_proj_with_mqa.weight");
      if (config_.attention_bias) l.kv_a_bias = by_name.at(p + "self_attn.kv_a_proj_with_mqa.bias");
      l.kv_a_norm = by_name.at(p + "self_attn.kv_a_layernorm.weight");
      l.kv_b = by_name.at(p + "self_attn.kv_b_proj.weight");
    } else {
      l.q = by_name.at(p + "self_attn.q_proj.weight");
      l.k = by_name.at(p + "self_attn.k_proj.weight");
      l.v = by_name.at(p + "self_attn.v_proj.weight");
    }
    if (config_.attention_bias && !config_.mla()) {
      l.q_bias = by_name.at(p + "self_attn.q_proj.bias");
      l.k_bias = by_name.at(p + "self_attn.k_proj.bias");
      l.v_bias = by_name.at(p + "self_attn.v_proj.bias");
    }
    if (config_.qk_norm) {
      l.q_norm = by_name.at(p + "self_attn.q_norm.weight");
      l.k_norm = by_name.at(p + "self_attn.k_norm.weight");
    }
    if (config_.qk_layer_norm_shared) {
      l.q_norm_bias = by_name.at(p + "self_attn.q_norm.bias");
      l.k_norm_bias = by_name.at(p + "self_attn.k_norm.bias");
    }
    l.o = by_name.at(p + "self_attn.o_proj.weight");
    if (config_.output_bias) l.o_bias = by_name.at(p + "self_attn.o_proj.bias");
    if (config_.gpt_oss) l.sinks = by_name.at(p + "self_attn.sinks");
    if (!config_.one_norm_per_layer && !config_.norm_without_parameters) {
      l.post_norm = by_name.at(p + "post_attention_layernorm.weight");
    }
    if (!config_.one_norm_per_layer && config_.layer_norm && config_.layer_norm_bias) {
      l.post_norm_bias = by_name.at(p + "post_attention_layernorm.bias");
    }
    if (config_.sandwich_norms) {
      if (config_.pre_norms) l.pre_ff_norm = by_name.at(p + "pre_feedforward_layernorm.weight");
      l.post_ff_norm = by_name.at(p + "post_feedforward_layernorm.weight");
    }
    if (!config_.is_moe_layer(i)) {
      if (config_.gated_mlp) l.gate = by_name.at(p + "mlp.gate_proj.weight");
      l.up = by_name.at(p + "mlp.up_proj.weight");
      l.down = by_name.at(p + "mlp.down_proj.weight");
      if (config_.mlp_bias) {
        l.up_bias = by_name.at(p + "mlp.up_proj.bias");
        l.down_bias = by_name.at(p + "mlp.down_proj.bias");
      }
      layers_.push_back(std::move(l));
      continue;
    }
    const std::string moe = absl::StrCat(p, config_.moe_module(), ".");
    if (config_.gpt_oss) {
      l.router = by_name.at(moe + "router.weight");
      l.router_logit_bias = by_name.at(moe + "router.bias");
      l.experts_gate_up = by_name.at(moe + "experts.gate_up_proj");
      l.experts_gate_up_bias = by_name.at(moe + "experts.gate_up_proj_bias");
      l.experts_down = by_name.at(moe + "experts.down_proj");
      l.experts_down_bias = by_name.at(moe + "experts.down_proj_bias");
      layers_.push_back(std::move(l));
      continue;
    }
    l.router = by_name.at(moe + "gate.weight");
    if (config_.router_sigmoid) l.router_bias = by_name.at(moe + "gate.e_score_correction_bias");
    for (std::int64_t e = 0; e < config_.num_experts; ++e) {
      const ExpertNames names = ExpertWeightNames(config_, i, e);
      l.expert_gate.push_back(by_name.at(names.gate));
      l.expert_up.push_back(by_name.at(names.up));
      l.expert_down.push_back(by_name.at(names.down));
    }
    if (config_.shared_expert_intermediate_size > 0) {
      const std::string shared = absl::StrCat(moe, config_.shared_expert_module(), ".");
      l.gate = by_name.at(shared + "gate_proj.weight");
      l.up = by_name.at(shared + "up_proj.weight");
      l.down = by_name.at(shared + "down_proj.weight");
      if (config_.shared_expert_gate) l.shared_expert_gate = by_name.at(moe + "shared_expert_gate.weight");
    }
    layers_.push_back(std::move(l));
  }
}

absl::StatusOr<std::unique_ptr<CausalLM>> CausalLM::Random(const ModelConfig& config,
                                                           at::ScalarType dtype, std::uint64_t seed) {
  std::unique_ptr<CausalLM> model(new CausalLM(config, dtype));
  at::Generator gen = at::detail::createCPUGenerator(seed);
  for (const auto& [name, shape] : ExpectedTensors(config)) {
    at::Tensor t;
    if (config.mamba && absl::EndsWith(name, "mixer.A_log")) {  // MambaMixer: S4D-real, A = -(1, 2, ..., N) per channel
      t = at::log(at::arange(1, shape[1] + 1, HostOptions(at::kFloat))).expand(shape).contiguous();
    } else if (config.mamba && absl::EndsWith(name, "mixer.D")) {
      t = at::ones(shape, HostOptions(at::kFloat));
    } else if (config.mamba && absl::EndsWith(name, "dt_proj.bias")) {
      // softplus(bias) = Δ log-uniform in [0.001, 0.1], floored at 1e-4 (time_step_min/max/floor's defaults)
      const at::Tensor dt = at::exp(at::rand(shape, gen) * (std::log(0.1) - std::log(0.001)) + std::log(0.001)).clamp_min(1e-4);
      t = dt + at::log(-at::expm1(-dt));
    } else if (config.mamba && absl::EndsWith(name, "conv1d.weight")) {  // kaiming_uniform(a = sqrt(5)): ±1/sqrt(fan_in)
      const double bound = 1.0 / std::sqrt(static_cast<double>(shape[1] * shape[2]));
      t = at::empty(shape, HostOptions(at::kFloat)).uniform_(-bound, bound, gen);
    } else if (name.find("norm.weight") != std::string::npos) {  // Gemma's store the offset from 1
      t = config.norm_weight_offset ? at::zeros(shape, HostOptions(at::kFloat)) : at::ones(shape, HostOptions(at::kFloat));
    } else if (absl::EndsWith(name, ".bias") || absl::EndsWith(name, "_bias")) {
      t = at::zeros(shape, HostOptions(at::kFloat));
    } else {
      t = at::normal(0.0, config.initializer_range, shape, gen);
    }
    model->params_.push_back({name, t.to(dtype)});
  }
  model->Index();
  return model;
}

absl::StatusOr<std::unique_ptr<CausalLM>> CausalLM::FromTensors(
    const ModelConfig& config, std::map<std::string, at::Tensor> tensors, at::ScalarType dtype) {
  std::unique_ptr<CausalLM> model(new CausalLM(config, dtype));
  POSTTRAIN_RETURN_IF_ERROR(SplitFusedProjections(config, &tensors));
  const std::vector<FusedTensor> fused = FusedTensors(config);
  std::map<std::string, const FusedTensor*> fused_of;  // Phi-3: a projection → the checkpoint tensor holding it
  for (const FusedTensor& f : fused) {
    for (const std::string& part : f.parts) fused_of[part] = &f;
  }
  for (const auto& [name, shape] : ExpectedTensors(config)) {
    auto it = tensors.find(name);
    if (auto f = fused_of.find(name); it == tensors.end() && f != fused_of.end()) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint lacks tensor '", f->second->name, "' of shape ",
                                                     ShapeText({f->second->total_rows(), config.hidden_size})));
    }
    if (it == tensors.end()) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint lacks tensor '", CheckpointNameOf(config, name), "' of shape ",
                                                     ShapeText(CheckpointShapeOf(config, name, shape))));
    }
    if (it->second.sizes().vec() != shape) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", CheckpointNameOf(config, name), "' has shape ",
                                                     ShapeText(it->second.sizes()), ", config.json implies ",
                                                     ShapeText(shape)));
    }
    if (!at::isFloatingType(it->second.scalar_type())) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", CheckpointNameOf(config, name), "' has non-float dtype ",
                                                     c10::toString(it->second.scalar_type())));
    }
    model->params_.push_back({name, it->second.to(dtype).contiguous()});
    tensors.erase(it);
  }
  std::vector<std::string> unexpected;
  for (const auto& [name, tensor] : tensors) {
    const bool ignorable = name == "lm_head.weight" || (IsNeox(config) && name == "embed_out.weight") ||  // tied: the embedding serves
                           name.find("rotary_emb.inv_freq") != std::string::npos ||
                           // GLM-4.5's and DeepSeek-V3's multi-token-prediction layers past the last
                           // (Glm4MoeModel and DeepseekV3Model ignore them too)
                           ((config.model_type == "glm4_moe" || config.model_type == "deepseek_v3") &&
                            DecoderLayerOf(name) >= config.num_hidden_layers);
    if (!ignorable) unexpected.push_back(name);
  }
  if (!unexpected.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint has tensors this ", config.architecture,
                                                   " does not use: ", absl::StrJoin(unexpected, ", ")));
  }
  model->Index();
  return model;
}

std::vector<at::Tensor> CausalLM::parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& p : params_) out.push_back(p.second);
  return out;
}

void CausalLM::MoveTo(at::Device device) {
  c10::NoGradGuard no_grad;
  for (auto& [name, t] : params_) t = t.to(device);
  inv_freq_ = inv_freq_.to(device);
  if (local_inv_freq_.defined()) local_inv_freq_ = local_inv_freq_.to(device);
  if (long_inv_freq_.defined()) long_inv_freq_ = long_inv_freq_.to(device);
  if (alibi_slopes_.defined()) alibi_slopes_ = alibi_slopes_.to(device);
  if (rope_exponent_.defined()) rope_exponent_ = rope_exponent_.to(device);
  Index();
}

at::Tensor CausalLM::AddDelta(std::int64_t layer, LinearSite site, const at::Tensor& x, const at::Tensor& w,
                              const at::Tensor& b, const at::Tensor& base) const {
  return adapter_ == nullptr ? base : adapter_->Adapt(layer, site, x, w, b, base);
}

at::Tensor CausalLM::Project(std::int64_t layer, LinearSite site, const at::Tensor& x, const at::Tensor& w,
                             const at::Tensor& b) const {
  return AddDelta(layer, site, x, w, b, Linear(x, w, b));
}

std::int64_t CausalLM::NumParameters() const {
  std::int64_t n = 0;
  for (const auto& [name, t] : params_) n += t.numel();
  return n;
}

std::unique_ptr<CausalLM> CausalLM::BaseView() const {
  std::unique_ptr<CausalLM> view(new CausalLM(config_, dtype_));
  view->params_ = params_;  // the same tensors: no copy
  view->inv_freq_ = inv_freq_;
  view->local_inv_freq_ = local_inv_freq_;
  view->long_inv_freq_ = long_inv_freq_;
  view->rope_exponent_ = rope_exponent_;
  view->Index();
  return view;
}

const char* LinearSiteModule(LinearSite site) {
  switch (site) {
    case LinearSite::kQ: return "self_attn.q_proj";
    case LinearSite::kK: return "self_attn.k_proj";
    case LinearSite::kV: return "self_attn.v_proj";
    case LinearSite::kO: return "self_attn.o_proj";
    case LinearSite::kGate: return "mlp.gate_proj";
    case LinearSite::kUp: return "mlp.up_proj";
    case LinearSite::kDown: return "mlp.down_proj";
    case LinearSite::kQA: return "self_attn.q_a_proj";
    case LinearSite::kQB: return "self_attn.q_b_proj";
    case LinearSite::kKVA: return "self_attn.kv_a_proj_with_mqa";
    case LinearSite::kKVB: return "self_attn.kv_b_proj";
    case LinearSite::kInProj: return "mixer.in_proj";
    case LinearSite::kXProj: return "mixer.x_proj";
    case LinearSite::kDtProj: return "mixer.dt_proj";
    case LinearSite::kOutProj: return "mixer.out_proj";
  }
  return "";
}

const char* LinearSiteName(LinearSite site) {
  const char* module = LinearSiteModule(site);
  return std::strchr(module, '.') + 1;
}

std::string DecoderLayersPrefix(const ModelConfig& config) {
  return IsNeox(config)                      ? "gpt_neox.layers."
         : IsMamba(config)                   ? "backbone.layers."
         : IsGpt2(config) || IsGptj(config) || IsBloom(config) || IsGptNeo(config) || IsGptBigCode(config) || IsFalcon(config) ? "transformer.h."
         : IsOpt(config)                     ? "model.decoder.layers."
         : IsDbrx(config)                    ? "transformer.blocks."
                                             : "model.layers.";
}

std::vector<LinearModule> LinearModules(const ModelConfig& c) {
  const std::int64_t hidden = c.hidden_size, q = c.num_attention_heads * c.head_dim;
  const std::int64_t kv = c.num_key_value_heads * c.head_dim, inter = c.intermediate_size;
  using Part = LinearModule::Part;
  std::vector<LinearModule> out;
  // q/k/v one module each, then o and the ungated MLP's up and down, by the family's names.
  auto separate = [&](const char* o, const char* up, const char* down, const std::string& attention = "self_attn.") {
    out.push_back({attention + "q_proj", hidden, q, {Part{LinearSite::kQ, 0, q}}});
    out.push_back({attention + "k_proj", hidden, kv, {Part{LinearSite::kK, 0, kv}}});
    out.push_back({attention + "v_proj", hidden, kv, {Part{LinearSite::kV, 0, kv}}});
    out.push_back({o, q, hidden, {Part{LinearSite::kO, 0, hidden}}});
    out.push_back({up, hidden, inter, {Part{LinearSite::kUp, 0, inter}}});
    out.push_back({down, inter, hidden, {Part{LinearSite::kDown, 0, hidden}}});
    return out;
  };
  if (IsMamba(c)) {  // MambaMixer's nn.Linear modules
    const std::int64_t I = c.intermediate_size, xs = c.time_step_rank + 2 * c.state_size;
    out.push_back({"mixer.in_proj", hidden, 2 * I, {Part{LinearSite::kInProj, 0, 2 * I}}});
    out.push_back({"mixer.x_proj", I, xs, {Part{LinearSite::kXProj, 0, xs}}});
    out.push_back({"mixer.dt_proj", c.time_step_rank, I, {Part{LinearSite::kDtProj, 0, I}}});
    out.push_back({"mixer.out_proj", I, hidden, {Part{LinearSite::kOutProj, 0, hidden}}});
    return out;
  }
  if (IsNeox(c) || IsBloom(c)) {  // GPT-NeoX's and BLOOM's modules, as their checkpoints and PEFT name them
    const std::string attention = IsNeox(c) ? "attention." : "self_attention.";
    LinearModule qkv{attention + "query_key_value", hidden, 3 * q,
                     {Part{LinearSite::kQ, 0, q}, Part{LinearSite::kK, q, q}, Part{LinearSite::kV, 2 * q, q}}};
    qkv.head_groups = c.num_attention_heads;  // [q_h, k_h, v_h] by head
    out.push_back(qkv);
    out.push_back({attention + "dense", q, hidden, {Part{LinearSite::kO, 0, hidden}}});
    out.push_back({"mlp.dense_h_to_4h", hidden, inter, {Part{LinearSite::kUp, 0, inter}}});
    out.push_back({"mlp.dense_4h_to_h", inter, hidden, {Part{LinearSite::kDown, 0, hidden}}});
    return out;
  }
  if (IsGpt2(c)) {  // GPT-2's Conv1D modules, as its checkpoints and PEFT name them
    out.push_back({"attn.c_attn", hidden, 3 * q,
                   {Part{LinearSite::kQ, 0, q}, Part{LinearSite::kK, q, q}, Part{LinearSite::kV, 2 * q, q}}});
    out.push_back({"attn.c_proj", q, hidden, {Part{LinearSite::kO, 0, hidden}}});
    out.push_back({"mlp.c_fc", hidden, inter, {Part{LinearSite::kUp, 0, inter}}});
    out.push_back({"mlp.c_proj", inter, hidden, {Part{LinearSite::kDown, 0, hidden}}});
    for (LinearModule& m : out) m.conv1d = true;
    return out;
  }
  if (IsStarcoder2(c)) {  // StarCoder2's modules, as its checkpoints and PEFT name them
    return separate("self_attn.o_proj", "mlp.c_fc", "mlp.c_proj");
  }
  if (IsPhi(c)) {  // Phi's modules, as its checkpoints and PEFT name them
    return separate("self_attn.dense", "mlp.fc1", "mlp.fc2");
  }
  if (IsGptj(c)) {  // GPT-J's modules, as its checkpoints and PEFT name them
    return separate("attn.out_proj", "mlp.fc_in", "mlp.fc_out", "attn.");
  }
  if (IsOpt(c)) {  // OPT's modules, as its checkpoints and PEFT name them
    return separate("self_attn.out_proj", "fc1", "fc2");
  }
  if (IsGptBigCode(c)) {  // GPTBigCode's nn.Linear modules, as its checkpoints and PEFT name them
    LinearModule qkv{"attn.c_attn", hidden, q + 2 * kv,
                     {Part{LinearSite::kQ, 0, q}, Part{LinearSite::kK, q, kv}, Part{LinearSite::kV, q + kv, kv}}};
    if (c.num_key_value_heads != 1) qkv.head_groups = c.num_key_value_heads;  // without multi_query: [q_h, k_h, v_h] by head
    out.push_back(qkv);
    out.push_back({"attn.c_proj", q, hidden, {Part{LinearSite::kO, 0, hidden}}});
    out.push_back({"mlp.c_fc", hidden, inter, {Part{LinearSite::kUp, 0, inter}}});
    out.push_back({"mlp.c_proj", inter, hidden, {Part{LinearSite::kDown, 0, hidden}}});
    return out;
  }
  if (IsFalcon(c)) {  // Falcon's modules, as its checkpoints and PEFT name them
    // query_key_value: grouped by key/value head (GroupedQkvRows; multi_query's one
    // group is q, k, v one after the other).
    LinearModule qkv{"self_attention.query_key_value", hidden, q + 2 * kv,
                     {Part{LinearSite::kQ, 0, q}, Part{LinearSite::kK, q, kv}, Part{LinearSite::kV, q + kv, kv}}};
    if (c.num_key_value_heads != 1) qkv.head_groups = c.num_key_value_heads;
    out.push_back(qkv);
    out.push_back({"self_attention.dense", q, hidden, {Part{LinearSite::kO, 0, hidden}}});
    out.push_back({"mlp.dense_h_to_4h", hidden, inter, {Part{LinearSite::kUp, 0, inter}}});
    out.push_back({"mlp.dense_4h_to_h", inter, hidden, {Part{LinearSite::kDown, 0, hidden}}});
    return out;
  }
  if (IsGptNeo(c)) {  // GPT-Neo's modules, as its checkpoints and PEFT name them
    return separate("attn.attention.out_proj", "mlp.c_fc", "mlp.c_proj", "attn.attention.");
  }
  if (IsDbrx(c)) {  // DBRX's attention, as its checkpoints and PEFT name it (its experts are fused parameters, no Linear)
    out.push_back({"norm_attn_norm.attn.Wqkv", hidden, q + 2 * kv,
                   {Part{LinearSite::kQ, 0, q}, Part{LinearSite::kK, q, kv}, Part{LinearSite::kV, q + kv, kv}}});
    out.push_back({"norm_attn_norm.attn.out_proj", q, hidden, {Part{LinearSite::kO, 0, hidden}}});
    return out;
  }
  if (c.mla()) {  // DeepseekV3Attention's projections
    const std::int64_t heads = c.num_attention_heads, qk = heads * c.qk_head_dim(), latent = c.kv_lora_rank;
    const std::int64_t kv_a = latent + c.qk_rope_head_dim, kv_b = heads * (c.qk_nope_head_dim + c.v_head_dim);
    if (c.q_lora_rank > 0) {
      out.push_back({"self_attn.q_a_proj", hidden, c.q_lora_rank, {Part{LinearSite::kQA, 0, c.q_lora_rank}}});
      out.push_back({"self_attn.q_b_proj", c.q_lora_rank, qk, {Part{LinearSite::kQB, 0, qk}}});
    } else {
      out.push_back({"self_attn.q_proj", hidden, qk, {Part{LinearSite::kQ, 0, qk}}});
    }
    out.push_back({"self_attn.kv_a_proj_with_mqa", hidden, kv_a, {Part{LinearSite::kKVA, 0, kv_a}}});
    out.push_back({"self_attn.kv_b_proj", latent, kv_b, {Part{LinearSite::kKVB, 0, kv_b}}});
    out.push_back({"self_attn.o_proj", heads * c.v_head_dim, hidden, {Part{LinearSite::kO, 0, hidden}}});
  } else if (c.fused_projections) {
    out.push_back({"self_attn.qkv_proj", hidden, q + 2 * kv,
                   {Part{LinearSite::kQ, 0, q}, Part{LinearSite::kK, q, kv}, Part{LinearSite::kV, q + kv, kv}}});
  } else {
    out.push_back({"self_attn.q_proj", hidden, q, {Part{LinearSite::kQ, 0, q}}});
    out.push_back({"self_attn.k_proj", hidden, kv, {Part{LinearSite::kK, 0, kv}}});
    out.push_back({"self_attn.v_proj", hidden, kv, {Part{LinearSite::kV, 0, kv}}});
  }
  if (!c.mla()) out.push_back({"self_attn.o_proj", q, hidden, {Part{LinearSite::kO, 0, hidden}}});
  if (c.fused_projections) {
    out.push_back({"mlp.gate_up_proj", hidden, 2 * inter, {Part{LinearSite::kGate, 0, inter}, Part{LinearSite::kUp, inter, inter}}});
  } else {
    if (c.gated_mlp) out.push_back({"mlp.gate_proj", hidden, inter, {Part{LinearSite::kGate, 0, inter}}});
    out.push_back({"mlp.up_proj", hidden, inter, {Part{LinearSite::kUp, 0, inter}}});
  }
  out.push_back({"mlp.down_proj", inter, hidden, {Part{LinearSite::kDown, 0, hidden}}});
  return out;
}

std::unique_ptr<CausalLM> CausalLM::Clone() const {
  std::unique_ptr<CausalLM> copy(new CausalLM(config_, dtype_));
  for (const auto& [name, t] : params_) copy->params_.push_back({name, t.detach().clone()});
  copy->Index();
  return copy;
}

KVCache CausalLM::NewCache(std::int64_t batch_size, std::int64_t capacity) const {
  KVCache cache;
  cache.capacity = capacity;
  for (std::int64_t i = 0; i < config_.num_hidden_layers && config_.mamba; ++i) {  // the conv's inputs, the SSM state
    cache.keys.push_back(at::zeros({batch_size, config_.intermediate_size, config_.conv_kernel - 1}, options()));
    cache.values.push_back(
        at::zeros({batch_size, config_.intermediate_size, config_.state_size}, options().dtype(ComputeDtype(dtype_))));
  }
  for (std::int64_t i = 0; i < config_.num_hidden_layers && !config_.mamba; ++i) {
    const std::int64_t heads = config_.attention_kv_heads();
    cache.keys.push_back(at::zeros({batch_size, heads, capacity, config_.qk_head_dim()}, options()));
    cache.values.push_back(at::zeros({batch_size, heads, capacity, config_.value_head_dim()}, options()));
  }
  return cache;
}

at::Tensor CausalLM::ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const {
  const std::int64_t rotated = config_.rotary_dim();
  const auto rotate = config_.rope_interleaved ? RotatePairs : RotateHalf;  // Cohere's pairs
  if (rotated == x.size(-1)) return x * cos + rotate(x) * sin;
  // Partial rotary (Phi3Attention): the first `rotated` dimensions, the rest as they are.
  const std::vector<at::Tensor> parts = x.split_with_sizes({rotated, x.size(-1) - rotated}, -1);
  return at::cat({parts[0] * cos + rotate(parts[0]) * sin, parts[1]}, -1);
}

at::Tensor CausalLM::MambaMixer(std::int64_t li, const at::Tensor& x, const at::Tensor& mask, at::Tensor* conv,
                                at::Tensor* ssm) const {
  // MambaMixer.slow_forward (FalconMambaMixer's with mamba_bc_norm), in the model's dtype
  // but for the scan (fp32).
  const Layer& l = layers_[static_cast<size_t>(li)];
  const std::int64_t T = x.size(1), I = config_.intermediate_size, N = config_.state_size;
  const std::int64_t K = config_.conv_kernel, R = config_.time_step_rank;
  const at::ScalarType compute = ComputeDtype(dtype_);
  const Activation act = config_.activation();
  const std::vector<at::Tensor> uz = Project(li, LinearSite::kInProj, x, l.in_proj, l.in_proj_bias).chunk(2, -1);
  const at::Tensor m = mask.defined() ? mask.to(dtype_).unsqueeze(1) : at::Tensor();  // [B, 1, T]
  at::Tensor u = uz[0].transpose(1, 2);                                                // [B, I, T]
  if (m.defined()) u = u * m;
  // The causal depthwise conv over the inputs before these and these: no padding needed.
  const at::Tensor inputs = at::cat({conv->to(u.scalar_type()), u}, -1);  // [B, I, K - 1 + T]
  *conv = inputs.narrow(-1, T, K - 1);
  u = Activate(at::conv1d(inputs, l.conv_w, l.conv_b, /*stride=*/at::IntArrayRef{1}, /*padding=*/at::IntArrayRef{0},
                          /*dilation=*/at::IntArrayRef{1}, /*groups=*/I), act);
  if (m.defined()) u = u * m;
  u = u.transpose(1, 2);  // [B, T, I]
  std::vector<at::Tensor> dbc = Project(li, LinearSite::kXProj, u, l.x_proj, at::Tensor()).split_with_sizes({R, N, N}, -1);
  if (config_.mamba_bc_norm) {  // FalconMamba's rms_forward: no weight
    for (at::Tensor& t : dbc) {
      const at::Tensor h = t.to(compute);
      t = (h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + config_.mixer_rms_eps)).to(t.scalar_type());
    }
  }
  const at::Tensor dt = at::softplus(Project(li, LinearSite::kDtProj, dbc[0], l.dt_proj, l.dt_bias)).to(compute);  // [B, T, I]
  const at::Tensor A = -at::exp(l.a_log.to(compute));                                                          // [I, N]
  const at::Tensor decay = at::exp(dt.unsqueeze(-1) * A);                                                      // [B, T, I, N]
  const at::Tensor input = dt.unsqueeze(-1) * dbc[1].to(compute).unsqueeze(2) * u.to(compute).unsqueeze(-1);  // [B, T, I, N]
  // s_t = decay_t ⊙ s_{t-1} + input_t and y_t = s_t C_t: on the CPU one fused loop
  // (model/selective_scan.h); elsewhere one step at a time as transformers' loop.
  at::Tensor y;  // [B, T, I]
  if (decay.is_cpu()) {
    auto [scanned, last] = internal::SelectiveScan(decay, input, dbc[2].to(compute), ssm->to(compute));
    *ssm = last;
    y = scanned.to(dtype_);
  } else {
    std::vector<at::Tensor> states;
    states.reserve(static_cast<size_t>(T));
    at::Tensor s = ssm->to(compute);
    for (std::int64_t t = 0; t < T; ++t) {
      s = at::addcmul(input.select(1, t), decay.select(1, t), s);
      states.push_back(s);
    }
    *ssm = s;
    // (in the model's dtype, as transformers' ssm_state.to(dtype) @ C)
    y = at::matmul(at::stack(states, 1).to(dtype_), dbc[2].unsqueeze(-1)).squeeze(-1);
  }
  y = (y + u * l.d_skip) * Activate(uz[1], act);  // + D ⊙ u_t, gated by act(z)
  return Project(li, LinearSite::kOutProj, y, l.out_proj, l.out_proj_bias);
}

at::Tensor CausalLM::MambaLayer(std::int64_t li, const at::Tensor& h, const at::Tensor& mask, at::Tensor* conv,
                                at::Tensor* ssm) const {
  // MambaBlock: the norm reads h in the model's dtype; the residual stays in fp32 with residual_in_fp32.
  const Layer& l = layers_[static_cast<size_t>(li)];
  const at::Tensor out = MambaMixer(li, RmsNorm(h.to(dtype_), l.input_norm, config_), mask, conv, ssm);
  return (config_.residual_in_fp32 ? h.to(ComputeDtype(dtype_)) : h) + out;
}

std::array<at::Tensor, 3> CausalLM::LatentQkv(std::int64_t li, const at::Tensor& x, const at::Tensor& cos,
                                               const at::Tensor& sin) const {
  // DeepseekV3Attention.forward; its two latent RMSNorms keep DeepseekV3RMSNorm's default eps.
  constexpr double kLatentNormEps = 1e-6;
  auto latent_norm = [](const at::Tensor& t, const at::Tensor& weight) {
    const at::Tensor h = t.to(ComputeDtype(t.scalar_type()));
    return weight * (h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + kLatentNormEps)).to(t.scalar_type());
  };
  const Layer& l = layers_[static_cast<size_t>(li)];
  const std::int64_t H = config_.num_attention_heads, nope = config_.qk_nope_head_dim, rope = config_.qk_rope_head_dim;
  const std::int64_t latent = config_.kv_lora_rank;
  std::vector<std::int64_t> heads_shape = x.sizes().vec();
  heads_shape.back() = H;
  heads_shape.push_back(-1);  // [.., H, -1]
  at::Tensor q = config_.q_lora_rank > 0
                     ? Project(li, LinearSite::kQB, latent_norm(Project(li, LinearSite::kQA, x, l.q_a, l.q_a_bias), l.q_a_norm),
                               l.q, at::Tensor())
                     : Project(li, LinearSite::kQ, x, l.q, at::Tensor());
  q = q.view(heads_shape);
  const at::Tensor compressed = Project(li, LinearSite::kKVA, x, l.kv_a, l.kv_a_bias);  // [.., latent + rope]
  const std::vector<at::Tensor> parts = compressed.split_with_sizes({latent, rope}, -1);
  const at::Tensor kv = Project(li, LinearSite::kKVB, latent_norm(parts[0], l.kv_a_norm), l.kv_b, at::Tensor()).view(heads_shape);
  const std::vector<at::Tensor> kv_parts = kv.split_with_sizes({nope, config_.v_head_dim}, -1);
  const std::vector<at::Tensor> q_parts = q.split_with_sizes({nope, rope}, -1);
  const at::Tensor q_rot = ApplyRope(q_parts[1], cos, sin);
  at::Tensor k_rot = ApplyRope(parts[1].unsqueeze(-2), cos, sin);  // [.., 1, rope]: one for every head
  std::vector<std::int64_t> expanded = kv_parts[0].sizes().vec();
  expanded.back() = rope;
  k_rot = k_rot.expand(expanded);
  return {at::cat({q_parts[0], q_rot}, -1), at::cat({kv_parts[0], k_rot}, -1), kv_parts[1]};
}

bool CausalLM::RopeDependsOnLength() const { return long_inv_freq_.defined() || rope_exponent_.defined(); }

at::Tensor CausalLM::GlobalInvFreq(std::int64_t length) const {
  // As transformers' dynamic_rope_update, by the largest position + 1 of this
  // forward (transformers also keeps a grown table for shorter forwards until one
  // fits the original context; here each forward decides alone, which is the same
  // whenever lengths only grow, as in generation).
  if (long_inv_freq_.defined()) {  // longrope: the long factors past the original context
    return length > config_.rope_scaling->original_max_position_embeddings ? long_inv_freq_ : inv_freq_;
  }
  if (rope_exponent_.defined() && length > config_.max_position_embeddings) {
    // dynamic NTK: base θ (f L / M − (f − 1))^(d / (d − 2)), computed in double as
    // transformers does in python, the table in fp32.
    const double f = config_.rope_scaling->factor;
    const double dims = static_cast<double>(config_.rotary_dim());
    const double base = config_.rope_theta * std::pow(f * static_cast<double>(length) / static_cast<double>(config_.max_position_embeddings) - (f - 1),
                                                      dims / (dims - 2));
    return 1.0 / at::pow(base, rope_exponent_);
  }
  return inv_freq_;
}

std::pair<at::Tensor, at::Tensor> CausalLM::RopeCosSin(const at::Tensor& position_ids, bool local) const {
  // freqs [B, T, D/2] = positions ⊗ inv_freq; emb = [freqs, freqs] (Cohere: each
  // frequency twice in a row, repeat_interleave); in fp32.
  const std::int64_t length =
      !local && RopeDependsOnLength() && position_ids.numel() > 0 ? position_ids.max().item<std::int64_t>() + 1 : 0;
  const at::Tensor inv_freq = local ? local_inv_freq_ : GlobalInvFreq(length);
  at::Tensor freqs = position_ids.to(ComputeDtype(dtype_)).unsqueeze(-1) * inv_freq;
  at::Tensor emb = config_.rope_interleaved ? at::stack({freqs, freqs}, -1).flatten(-2) : at::cat({freqs, freqs}, -1);
  at::Tensor cos = emb.cos(), sin = emb.sin();
  if (rope_attention_scaling_ != 1.0 && !local) {  // longrope's and yarn's attention_factor
    cos = cos * rope_attention_scaling_;
    sin = sin * rope_attention_scaling_;
  }
  return {cos.to(dtype_).unsqueeze(1), sin.to(dtype_).unsqueeze(1)};  // [B, 1, T, D]
}

at::Tensor CausalLM::BranchOutput(const at::Tensor& x, const at::Tensor& weight) const {
  const at::Tensor out = config_.sandwich_norms ? RmsNorm(x, weight, config_) : x;
  return config_.residual_multiplier != 1.0 ? out * config_.residual_multiplier : out;  // Granite
}

at::Tensor CausalLM::LayerTail(std::int64_t li, const at::Tensor& h, const at::Tensor& normed, const at::Tensor& attn,
                               bool fuse_gate_up, bool dropout) const {
  const Layer& l = layers_[static_cast<size_t>(li)];
  const double p = dropout ? config_.residual_dropout : 0.0;  // on each branch before its residual add
  at::Tensor attn_out = BranchOutput(Project(li, LinearSite::kO, attn, l.o, l.o_bias), l.post_norm);
  if (p > 0) attn_out = at::dropout(attn_out, p, /*train=*/true);
  // GPT-NeoX's parallel residual: both branches read the layer's input, and
  // GPTNeoXLayer adds mlp + attention + input in that order.
  // OPT-350m: the norm after the residual add (self_attn_layer_norm, our input_norm).
  const at::Tensor mid = config_.parallel_residual ? h
                         : config_.post_layer_norm ? Norm(h + attn_out, l.input_norm, l.input_norm_bias, config_)
                                                   : h + attn_out;
  // Cohere: the MLP reads the attention's normed input (its layer has one norm).
  const at::Tensor x = config_.one_norm_per_layer ? normed
                       : config_.post_layer_norm  ? mid
                                                  : PreNorm(mid, config_.sandwich_norms ? l.pre_ff_norm : l.post_norm,
                                                            config_.sandwich_norms ? at::Tensor() : l.post_norm_bias, config_);
  at::Tensor mlp;
  if (l.router.defined()) {
    mlp = SparseMoe(l, x);
  } else if (!config_.gated_mlp) {  // GPT-NeoX: dense_4h_to_h(act(dense_h_to_4h(x)))
    mlp = Project(li, LinearSite::kDown, Activate(Project(li, LinearSite::kUp, x, l.up, l.up_bias), config_.activation()),
                  l.down, l.down_bias);
  } else {
    at::Tensor gate, up;
    if (fuse_gate_up) {
      const std::vector<at::Tensor> gate_up = internal::Linear(x, at::cat({l.gate, l.up})).chunk(2, -1);
      gate = AddDelta(li, LinearSite::kGate, x, l.gate, at::Tensor(), gate_up[0]);
      up = AddDelta(li, LinearSite::kUp, x, l.up, at::Tensor(), gate_up[1]);
    } else {
      gate = Project(li, LinearSite::kGate, x, l.gate, at::Tensor());
      up = Project(li, LinearSite::kUp, x, l.up, at::Tensor());
    }
    mlp = Project(li, LinearSite::kDown, Activate(gate, config_.activation()) * up, l.down, at::Tensor());
  }
  at::Tensor mlp_out = BranchOutput(mlp, l.post_ff_norm);
  if (p > 0) mlp_out = at::dropout(mlp_out, p, /*train=*/true);
  if (config_.post_layer_norm) return Norm(mid + mlp_out, l.post_norm, l.post_norm_bias, config_);  // OPT-350m
  return config_.parallel_residual ? mlp_out + attn_out + h : mid + mlp_out;
}

namespace {

// Each token of a packed stream counted once per row it stands for in transformers'
// padded batch: a sequence that others continue as often as the sequences at the
// ends of its continuations (DPO's prompt: twice), any other sequence once.
at::Tensor PackedTokenWeights(const PackedSequences& packed) {
  const std::int64_t n = packed.num_sequences();
  std::vector<double> below(static_cast<size_t>(n), 0.0), weight(static_cast<size_t>(n), 1.0);
  for (std::int64_t s = n - 1; s >= 0; --s) {
    const auto us = static_cast<size_t>(s);
    weight[us] = below[us] > 0 ? below[us] : 1.0;
    const std::int64_t pre = packed.prefix_of(s);
    if (pre >= 0) {
      TORCH_CHECK(pre < s, "packed sequence ", s, " continues a later one (", pre, ")");
      below[static_cast<size_t>(pre)] += weight[us];
    }
  }
  std::vector<float> tokens;
  tokens.reserve(static_cast<size_t>(packed.offsets.back()));
  for (std::int64_t s = 0; s < n; ++s) tokens.insert(tokens.end(), static_cast<size_t>(packed.length(s)), static_cast<float>(weight[static_cast<size_t>(s)]));
  return at::tensor(tokens, HostOptions(at::kFloat));
}

}  // namespace

void CausalLM::BeginRouterForward(const std::function<at::Tensor()>& weights) const {
  router_weights_ = at::Tensor();
  if (!records_router() || config_.num_experts == 0 || config_.router_sigmoid) return;
  router_weights_ = weights().to(device(), at::kFloat);
  router_forward_weight_ = router_weights_.sum().item<double>();
}

void CausalLM::RecordRouting(const at::Tensor& probs, const at::Tensor& experts) const {
  if (!router_weights_.defined()) return;
  TORCH_CHECK(router_weights_.size(0) == probs.size(0), "router recording: ", router_weights_.size(0),
              " token weights for ", probs.size(0), " routed tokens");
  const at::Tensor w = router_weights_.to(probs.scalar_type());
  at::Tensor choices;
  {
    c10::NoGradGuard no_grad;  // f is a count: transformers' one_hot takes no gradient either
    choices = (at::one_hot(experts, config_.num_experts).to(probs.scalar_type()) * w.view({-1, 1, 1})).sum(0);  // [k, E]
  }
  const at::Tensor load = (probs * w.unsqueeze(1)).sum(0);  // [E]
  router_choices_ = router_choices_.defined() ? router_choices_ + choices : choices;
  router_probs_ = router_probs_.defined() ? router_probs_ + load : load;
  router_weight_sum_ += router_forward_weight_;
}

at::Tensor CausalLM::TakeRouterAuxLoss() const {
  at::Tensor aux;
  if (router_probs_.defined()) {
    const double n = std::max(router_weight_sum_, 1e-30);  // all padding: f = P = 0
    aux = ((router_choices_ / n) * (router_probs_ / n).unsqueeze(0)).sum().to(at::kFloat) *
          static_cast<double>(config_.num_experts);
  }
  router_choices_ = router_probs_ = at::Tensor();
  router_weight_sum_ = 0.0;
  return aux;
}

at::Tensor CausalLM::ClipQkv(const at::Tensor& projected) const {
  if (config_.clip_qkv <= 0) return projected;
  return projected.clamp(-config_.clip_qkv, config_.clip_qkv);  // DbrxAttention: qkv.clamp(min=-clip, max=clip)
}

at::Tensor CausalLM::SparseMoe(const Layer& l, const at::Tensor& x) const {
  const std::int64_t hidden = config_.hidden_size, k = config_.num_experts_per_tok;
  at::Tensor flat = x.reshape({-1, hidden});
  if (flat.size(0) == 0) return at::zeros_like(x);
  if (config_.router_jitter_eps > 0 && dropout_ && at::GradMode::is_enabled()) {
    // DbrxRouter in training: its input, which the experts read too, times noise in [1 - eps, 1 + eps].
    const double eps = config_.router_jitter_eps;
    flat = flat * (at::rand_like(flat) * (2 * eps) + (1 - eps));
  }
  const Activation activation = config_.activation();
  auto swiglu = [&](const at::Tensor& in, const at::Tensor& gate, const at::Tensor& up, const at::Tensor& down) {
    return internal::Linear(Activate(internal::Linear(in, gate), activation) * internal::Linear(in, up), down);
  };
  at::Tensor weights, experts;  // [N, k]
  if (config_.gpt_oss) {
    // GptOssTopKRouter: the top k of the biased logits, softmaxed among themselves.
    const at::Tensor logits = internal::Linear(flat, l.router, l.router_logit_bias);
    auto [top, chosen] = at::topk(logits, k, -1);
    weights = at::softmax(top, -1, ComputeDtype(dtype_)).to(top.scalar_type());
    experts = chosen;
    // The load-balancing loss reads the softmax over all experts (the same top k).
    if (router_weights_.defined()) RecordRouting(at::softmax(logits, -1, ComputeDtype(dtype_)), experts);
  } else if (config_.router_sigmoid) {
    // GLM-4.5's router (see ModelConfig::router_sigmoid): scores in fp32, the choice
    // biased and limited to the best groups, the weights unbiased.
    const at::ScalarType compute = ComputeDtype(dtype_);
    const at::Tensor scores = at::sigmoid(internal::Linear(flat.to(compute), l.router.to(compute)));
    at::Tensor choice = scores + l.router_bias.to(compute);
    const std::int64_t groups = config_.n_group, per_group = config_.num_experts / groups;
    if (groups > 1) {
      const at::Tensor group_scores = std::get<0>(at::topk(choice.view({-1, groups, per_group}), 2, -1)).sum(-1);
      const at::Tensor kept = std::get<1>(at::topk(group_scores, config_.topk_group, -1, /*largest=*/true, /*sorted=*/false));
      const at::Tensor group_mask = at::zeros_like(group_scores).scatter_(1, kept, 1.0);
      const at::Tensor expert_mask = group_mask.unsqueeze(-1).expand({-1, groups, per_group}).reshape({-1, config_.num_experts});
      choice = choice.masked_fill(expert_mask == 0, 0.0);
    }
    experts = std::get<1>(at::topk(choice, k, -1));
    weights = scores.gather(1, experts);
    if (config_.norm_topk_prob) weights = weights / (weights.sum(-1, /*keepdim=*/true) + 1e-20);
    weights = weights * config_.routed_scaling_factor;
  } else {
    // The router: softmax in fp32 (fp64 for an fp64 model), the top k per token.
    const at::Tensor probs = at::softmax(internal::Linear(flat, l.router), -1, ComputeDtype(dtype_));
    std::tie(weights, experts) = at::topk(probs, k, -1);
    // DBRX's loss softmaxes what its router returns, the probabilities (ModelConfig::dbrx).
    if (router_weights_.defined()) RecordRouting(config_.dbrx ? at::softmax(probs.to(dtype_), -1, ComputeDtype(dtype_)) : probs, experts);
    if (config_.norm_topk_prob && config_.topk_norm_p == 1.0) {
      weights = weights / weights.sum(-1, /*keepdim=*/true);
    } else if (config_.norm_topk_prob) {  // DBRX: torch.norm(top_weights, p=moe_normalize_expert_weights)
      weights = weights / at::norm(weights, config_.topk_norm_p, {-1}, /*keepdim=*/true);
    }
  }
  // The N·k (token, expert) pairs grouped by expert (a stable sort keeps each
  // token's contributions in expert order, as transformers' loop adds them), each
  // group through its expert in one batch: one gather, one matmul chain per expert
  // that has tokens, one scatter-add.
  const at::Tensor flat_experts = experts.reshape({-1});
  const at::Tensor order = std::get<1>(at::sort(flat_experts, /*stable=*/true, /*dim=*/0, /*descending=*/false));
  const at::Tensor tokens = at::div(order, k, "floor");
  const at::Tensor counts = at::bincount(flat_experts, {}, config_.num_experts).to(at::kCPU);  // one host sync
  const at::Tensor routed = flat.index_select(0, tokens);
  std::vector<at::Tensor> outputs;
  std::int64_t start = 0;
  const auto* count = counts.data_ptr<std::int64_t>();
  for (std::int64_t e = 0; e < config_.num_experts; ++e) {
    if (count[e] == 0) continue;
    const auto ue = static_cast<size_t>(e);
    const at::Tensor in = routed.narrow(0, start, count[e]);
    if (config_.gpt_oss) {  // GptOssExperts: x W + b, gate/up interleaved, clamped, (up + 1) · gate · σ(1.702 gate)
      const double limit = config_.swiglu_limit;
      const at::Tensor gate_up = at::addmm(l.experts_gate_up_bias[e], in, l.experts_gate_up[e]);
      const at::Tensor gate = gate_up.slice(-1, 0, c10::nullopt, 2).clamp_max(limit);
      const at::Tensor up = gate_up.slice(-1, 1, c10::nullopt, 2).clamp(-limit, limit);
      const at::Tensor glu = gate * at::sigmoid(gate * 1.702);
      outputs.push_back(at::addmm(l.experts_down_bias[e], (up + 1) * glu, l.experts_down[e]));
      start += count[e];
      continue;
    }
    outputs.push_back(swiglu(in, l.expert_gate[ue], l.expert_up[ue], l.expert_down[ue]));
    start += count[e];
  }
  const at::Tensor scaled = at::cat(outputs) * weights.reshape({-1}).index_select(0, order).unsqueeze(-1);
  at::Tensor out = at::zeros_like(flat).index_add(0, tokens, scaled.to(flat.scalar_type()));
  if (l.shared_expert_gate.defined()) {  // Qwen2-MoE: + sigmoid(shared_expert_gate · x) · shared_expert(x)
    out = out + at::sigmoid(internal::Linear(flat, l.shared_expert_gate)) * swiglu(flat, l.gate, l.up, l.down);
  } else if (l.gate.defined()) {  // GLM-4.5: + shared_experts(x)
    out = out + swiglu(flat, l.gate, l.up, l.down);
  }
  return out.view(x.sizes());
}

at::Tensor CausalLM::HeadInput(const at::Tensor& hidden) const {
  // Phi's bias: a column of ones meets lm_head_weight()'s bias column.
  const at::Tensor x = lm_head_bias_.defined() ? at::cat({hidden, at::ones_like(hidden.narrow(-1, 0, 1))}, -1) : hidden;
  if (config_.logit_scale != 1.0) return x * config_.logit_scale;  // Cohere (exact for its 0.0625)
  return config_.logits_scaling != 1.0 ? x / config_.logits_scaling : x;
}

at::Tensor CausalLM::lm_head_weight() const {
  return lm_head_bias_.defined() ? at::cat({lm_head_, lm_head_bias_.unsqueeze(1)}, 1) : lm_head_;
}

bool CausalLM::DropoutNow() const {
  return dropout_ && at::GradMode::is_enabled() &&
         (config_.attention_dropout > 0 || config_.residual_dropout > 0 || config_.embedding_dropout > 0);
}

at::Tensor CausalLM::Embed(const at::Tensor& ids, const at::Tensor& positions, bool dropout) const {
  at::Tensor h = at::embedding(embed_, ids);
  if (project_in_.defined()) h = Linear(h, project_in_);  // OPT-350m: before the positions
  if (positions_.defined() && positions.numel() > 0) {  // GPT-2: wte[id] + wpe[position]; OPT: row position + 2
    const std::int64_t last = positions.max().item<std::int64_t>(), offset = config_.position_offset;
    TORCH_CHECK(last + offset < positions_.size(0), "position ", last, " is past the ", positions_.size(0) - offset,
                " positions this model has embeddings for (config.json's ",
                config_.model_type == "gpt2" ? "n_positions" : "max_position_embeddings",
                "); shorten the prompt or the completion");
    h = h + at::embedding(positions_, offset != 0 ? positions + offset : positions);
  }
  if (config_.embedding_multiplier != 1.0) {  // Granite
    h = h * config_.embedding_multiplier;
  } else if (config_.scale_embeddings) {
    // Gemma: sqrt(hidden_size) as an fp32 scalar, then rounded to the weights' dtype.
    const at::Tensor scale = at::scalar_tensor(std::sqrt(static_cast<double>(config_.hidden_size)), HostOptions(at::kFloat));
    h = h * scale.to(h.scalar_type());
  }
  if (embed_norm_.defined()) h = Norm(h, embed_norm_, embed_norm_bias_, config_);  // BLOOM's word_embeddings_layernorm
  if (dropout && config_.embedding_dropout > 0) h = at::dropout(h, config_.embedding_dropout, /*train=*/true);
  return h;
}

at::Tensor CausalLM::Hidden(const at::Tensor& staged_ids, const at::Tensor& staged_positions,
                            const at::Tensor& staged_mask, KVCache* cache) const {
  // Inputs may be staged on the host: they follow the model's device.
  const at::Tensor input_ids = staged_ids.to(device()), position_ids = staged_positions.to(device());
  const at::Tensor attention_mask = staged_mask.defined() ? staged_mask.to(device()) : staged_mask;
  TORCH_CHECK(input_ids.dim() == 2, "input_ids must be [B, T], got ", input_ids.sizes());
  TORCH_CHECK(position_ids.sizes() == input_ids.sizes(), "position_ids ", position_ids.sizes(),
              " must match input_ids ", input_ids.sizes());
  const std::int64_t B = input_ids.size(0), T = input_ids.size(1);
  const std::int64_t past = cache != nullptr ? cache->length : 0;
  const std::int64_t S = past + T;
  if (cache != nullptr) {
    TORCH_CHECK(S <= cache->capacity, "KV cache overflow: ", S, " positions, capacity ", cache->capacity);
    TORCH_CHECK(cache->keys.empty() || cache->keys[0].size(0) == B, "KV cache batch ",
                cache->keys[0].size(0), " != input batch ", B);
  }
  // D: each head's query/key width, Dv its value width (both head_dim but under MLA).
  const std::int64_t H = config_.num_attention_heads, KV = config_.attention_kv_heads();
  const std::int64_t G = H / KV, D = config_.qk_head_dim(), Dv = config_.value_head_dim();

  // blocked[b, 0, 0, t, s]: key s is padding, after query t or, in a layer with a
  // sliding window, outside it.
  const at::TensorOptions index_options = input_ids.options();
  const at::Tensor key_pos = at::arange(S, index_options);
  const at::Tensor query_pos = at::arange(past, S, index_options);
  if (attention_mask.defined()) {
    TORCH_CHECK(attention_mask.sizes() == at::IntArrayRef({B, S}), "attention_mask must be [B, ",
                S, "], got ", attention_mask.sizes());
  }
  // Router recording (set_record_router): this call's real tokens, row by row.
  BeginRouterForward([&] {
    return attention_mask.defined() ? attention_mask.narrow(1, past, T).reshape({-1}) : at::ones({B * T}, options().dtype(at::kFloat));
  });
  const auto end_router = absl::MakeCleanup([this] { EndRouterForward(); });
  if (config_.mamba) {  // state-space layers: this call's tokens after the states in the cache (or none)
    const at::Tensor mask = attention_mask.defined() ? attention_mask.narrow(1, past, T) : at::Tensor();
    at::Tensor h = Embed(input_ids, position_ids, DropoutNow());
    for (size_t i = 0; i < layers_.size(); ++i) {
      auto layer = [this, i, B, mask, cache](at::Tensor h) {
        at::Tensor conv = cache != nullptr ? cache->keys[i]
                                           : at::zeros({B, config_.intermediate_size, config_.conv_kernel - 1}, options());
        at::Tensor ssm = cache != nullptr ? cache->values[i]
                                          : at::zeros({B, config_.intermediate_size, config_.state_size},
                                                      options().dtype(ComputeDtype(dtype_)));
        at::Tensor out = MambaLayer(static_cast<std::int64_t>(i), h, mask, &conv, &ssm);
        if (cache != nullptr) {
          cache->keys[i].copy_(conv);
          cache->values[i].copy_(ssm);
        }
        return out;
      };
      h = runner_ != nullptr ? runner_->Run(static_cast<std::int64_t>(i), h, layer) : layer(h);
    }
    if (cache != nullptr) cache->length = S;
    return RmsNorm(h, final_norm_, config_).to(dtype_);
  }
  auto blocked_within = [&](std::int64_t window) {
    at::Tensor allowed = key_pos.unsqueeze(0) <= query_pos.unsqueeze(1);  // [T, S]
    if (window > 0 && window < S) allowed = allowed & (key_pos.unsqueeze(0) > query_pos.unsqueeze(1) - window);
    allowed = allowed.view({1, 1, 1, T, S});
    if (attention_mask.defined()) allowed = allowed & attention_mask.to(at::kBool).view({B, 1, 1, 1, S});
    return allowed.logical_not();
  };
  const at::Tensor blocked_causal = blocked_within(0);
  const at::Tensor blocked_window = config_.sliding_window ? blocked_within(*config_.sliding_window) : blocked_causal;
  const double lowest = std::numeric_limits<float>::lowest();
  // BLOOM's ALiBi [B or 1, KV, G, 1, S]: slope_h · (key position), the key's index
  // among its row's unpadded tokens (build_alibi_tensor's (cumsum(mask) - 1) · mask).
  at::Tensor alibi;
  if (alibi_slopes_.defined()) {
    const at::Tensor key_index = attention_mask.defined()
                                     ? (attention_mask.to(at::kLong).cumsum(-1) - 1) * attention_mask.to(at::kLong)
                                     : key_pos.unsqueeze(0);
    alibi = (alibi_slopes_.view({1, KV, G, 1, 1}) * key_index.to(at::kFloat).view({key_index.size(0), 1, 1, 1, S}))
                .to(ComputeDtype(dtype_));
  }

  auto [cos_global, sin_global] = RopeCosSin(position_ids);
  auto [cos_local, sin_local] = local_inv_freq_.defined() ? RopeCosSin(position_ids, /*local=*/true)
                                                          : std::pair<at::Tensor, at::Tensor>{};
  const bool drop = DropoutNow();
  at::Tensor h = Embed(input_ids, position_ids, drop);  // [B, T, hidden]
  for (size_t i = 0; i < layers_.size(); ++i) {
    const at::Tensor blocked = config_.window_of(static_cast<std::int64_t>(i)) > 0 ? blocked_window : blocked_causal;
    const bool local = config_.uses_local_rope(static_cast<std::int64_t>(i));  // Gemma 3's windowed layers
    const at::Tensor& cos = local ? cos_local : cos_global;
    const at::Tensor& sin = local ? sin_local : sin_global;
    // Everything the layer needs, by value: a runner may call it again in backward.
    auto layer = [this, i, B, T, H, KV, G, D, Dv, S, past, lowest, cos = cos, sin = sin, blocked, alibi, cache, drop](at::Tensor h) {
      const Layer& l = layers_[i];
      // OPT-350m: no norm before the attention (its norm follows the residual add, LayerTail).
      at::Tensor x = config_.post_layer_norm ? h : PreNorm(h, l.input_norm, l.input_norm_bias, config_);
      const auto li = static_cast<std::int64_t>(i);
      at::Tensor q, k, v;  // [B, heads, T, D or Dv]
      if (config_.mla()) {  // DeepSeek-V3: [B, T, H, ·] from the latent projections, cos/sin over [.., T, 1, ·]
        const std::array<at::Tensor, 3> qkv = LatentQkv(li, x, cos.transpose(1, 2), sin.transpose(1, 2));
        q = qkv[0].transpose(1, 2);
        k = qkv[1].transpose(1, 2);
        v = qkv[2].transpose(1, 2);
      } else {
        q = ClipQkv(Project(li, LinearSite::kQ, x, l.q, l.q_bias));
        k = ClipQkv(Project(li, LinearSite::kK, x, l.k, l.k_bias));
        if (config_.qk_norm && config_.qk_norm_over_heads) {  // OLMo 2: over the whole projection
          q = RmsNorm(q, l.q_norm, config_);
          k = RmsNorm(k, l.k_norm, config_);
        }
        q = q.view({B, T, H, D});
        k = k.view({B, T, KV, D});
        if (config_.qk_layer_norm) {  // Cohere: LayerNorm over each head's D dims, a weight per head (Phi: shared)
          q = HeadLayerNorm(q, l.q_norm, l.q_norm_bias, config_.rms_norm_eps);
          k = HeadLayerNorm(k, l.k_norm, l.k_norm_bias, config_.rms_norm_eps);
        } else if (config_.qk_norm && !config_.qk_norm_over_heads) {  // Qwen3: RMSNorm over each head's D dims, before RoPE
          q = RmsNorm(q, l.q_norm, config_);
          k = RmsNorm(k, l.k_norm, config_);
        }
        q = q.transpose(1, 2);
        k = k.transpose(1, 2);
        v = ClipQkv(Project(li, LinearSite::kV, x, l.v, l.v_bias)).view({B, T, KV, D}).transpose(1, 2);
        if (config_.uses_rope(static_cast<std::int64_t>(i))) {  // SmolLM3's NoPE layers skip it
          q = ApplyRope(q, cos, sin);
          k = ApplyRope(k, cos, sin);
        }
      }
      if (cache != nullptr) {
        cache->keys[i].narrow(2, past, T).copy_(k);
        cache->values[i].narrow(2, past, T).copy_(v);
        k = cache->keys[i].narrow(2, 0, S);
        v = cache->values[i].narrow(2, 0, S);
      }
      // Query head h uses key/value head h / G (transformers' repeat_kv).
      at::Tensor scores = at::matmul(q.reshape({B, KV, G, T, D}), k.unsqueeze(2).transpose(-1, -2));
      scores = scores.to(ComputeDtype(dtype_)) * config_.attention_scale(static_cast<std::int64_t>(i));
      if (alibi.defined()) scores = scores + alibi;  // BLOOM
      scores = SoftCap(scores, config_.attn_logit_softcapping).masked_fill(blocked, lowest);
      at::Tensor probs;
      if (l.sinks.defined()) {  // GPT-OSS: each head's sink joins the softmax, then is dropped
        const at::Tensor sink = l.sinks.to(scores.scalar_type()).view({1, KV, G, 1, 1}).expand({B, KV, G, T, 1});
        probs = at::softmax(at::cat({scores, sink}, -1), -1).narrow(-1, 0, scores.size(-1)).to(dtype_);
      } else {
        probs = at::softmax(scores, -1).to(dtype_);
      }
      if (drop && config_.attention_dropout > 0) probs = at::dropout(probs, config_.attention_dropout, /*train=*/true);
      at::Tensor attn = at::matmul(probs, v.unsqueeze(2));  // [B, KV, G, T, Dv]
      attn = attn.reshape({B, H, T, Dv}).transpose(1, 2).reshape({B, T, H * Dv});
      return LayerTail(li, h, x, attn, /*fuse_gate_up=*/false, drop);
    };
    h = runner_ != nullptr ? runner_->Run(static_cast<std::int64_t>(i), h, layer) : layer(h);
  }
  if (cache != nullptr) cache->length = S;
  return FinalHidden(h);
}

at::Tensor CausalLM::FinalHidden(const at::Tensor& h) const {
  const at::Tensor normed = PreNorm(h, final_norm_, final_norm_bias_, config_);  // OPT-350m: none
  return project_out_.defined() ? Linear(normed, project_out_) : normed;
}

at::Tensor CausalLM::Logits(const at::Tensor& hidden) const {
  at::Tensor logits = Linear(hidden, lm_head_, lm_head_bias_);
  if (config_.logits_scaling != 1.0) logits = logits / config_.logits_scaling;  // Granite, in the model's dtype
  if (config_.logit_scale != 1.0) logits = logits * config_.logit_scale;        // Cohere, likewise
  return SoftCap(logits.to(ComputeDtype(dtype_)), config_.final_logit_softcapping);
}

at::Tensor CausalLM::Forward(const at::Tensor& input_ids, const at::Tensor& position_ids,
                             const at::Tensor& attention_mask, KVCache* cache) const {
  return Logits(Hidden(input_ids, position_ids, attention_mask, cache));
}

PackedSequences PackSequences(const std::vector<std::vector<std::int64_t>>& sequences) {
  std::int64_t n = 0;
  for (const auto& s : sequences) {
    TORCH_CHECK(!s.empty(), "PackSequences: empty sequence");
    n += static_cast<std::int64_t>(s.size());
  }
  PackedSequences p;
  p.input_ids = at::empty({n}, HostOptions(at::kLong));  // host staging: moved by the model
  p.position_ids = at::empty({n}, HostOptions(at::kLong));
  std::int64_t* ids = p.input_ids.data_ptr<std::int64_t>();
  std::int64_t* pos = p.position_ids.data_ptr<std::int64_t>();
  p.offsets.push_back(0);
  std::int64_t t = 0;
  for (const auto& s : sequences) {
    for (size_t k = 0; k < s.size(); ++k, ++t) {
      ids[t] = s[k];
      pos[t] = static_cast<std::int64_t>(k);
    }
    p.offsets.push_back(t);
  }
  return p;
}

namespace {

// Scores of one tile are kept near this many elements (fp32: 16 MiB).
constexpr std::int64_t kTileScores = std::int64_t{4} << 20;

void CheckPacked(const PackedSequences& p) {
  TORCH_CHECK(p.input_ids.dim() == 1 && p.position_ids.sizes() == p.input_ids.sizes(),
              "PackedSequences: input_ids and position_ids must be [N]");
  TORCH_CHECK(p.offsets.size() >= 2 && p.offsets.front() == 0 && p.offsets.back() == p.input_ids.size(0),
              "PackedSequences: offsets must run from 0 to N");
  TORCH_CHECK(p.prefix.empty() || p.prefix.size() + 1 == p.offsets.size(),
              "PackedSequences: one prefix entry per sequence");
  for (std::int64_t k = 0; k < p.num_sequences(); ++k) {
    TORCH_CHECK(p.length(k) > 0, "PackedSequences: sequence ", k, " is empty");
    const std::int64_t q = p.prefix_of(k);
    TORCH_CHECK(q < k && (q < 0 || p.prefix_of(q) < 0), "PackedSequences: sequence ", k,
                " must have an earlier prefix without a prefix of its own, got ", q);
  }
}

// Attention of a packed stream, per sequence and per tile of queries.
// q [KV, G, N, D], k/v [KV, N, D] (all sequences' rows) → [KV, G, N, D].
// `window` > 0: each query sees the last `window` keys only (itself included);
// `softcap` > 0 caps the scaled scores (SoftCap) before the mask; `dropout` > 0
// drops attention probabilities with that probability; `alibi_slopes` [KV · G]
// (BLOOM), if defined, adds slope · (key index in prefix + sequence) to the scaled scores;
// `sinks` [KV · G] (GPT-OSS), if defined, add one logit per head to each softmax.
at::Tensor PackedAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const PackedSequences& p,
                           double scale, double softcap, at::ScalarType compute, std::int64_t window, double dropout,
                           const at::Tensor& alibi_slopes, const at::Tensor& sinks) {
  const std::int64_t KV = q.size(0), G = q.size(1);
  const double lowest = std::numeric_limits<float>::lowest();
  // Per-sequence views by split, not narrow: the backward of a split is one
  // concatenation, where each narrow's would fill a zero tensor of all N rows.
  std::vector<std::int64_t> lengths;
  for (std::int64_t s = 0; s < p.num_sequences(); ++s) lengths.push_back(p.length(s));
  const std::vector<at::Tensor> qs = q.split_with_sizes(lengths, 2), ks = k.split_with_sizes(lengths, 1),
                                vs = v.split_with_sizes(lengths, 1);
  std::vector<at::Tensor> outputs;
  for (std::int64_t s = 0; s < p.num_sequences(); ++s) {
    const std::int64_t L = p.length(s), pre = p.prefix_of(s);
    const std::int64_t P = pre < 0 ? 0 : p.length(pre);
    at::Tensor keys = ks[s], values = vs[s];
    if (P > 0) {
      keys = at::cat({ks[pre], keys}, 1);  // [KV, P + L, D]
      values = at::cat({vs[pre], values}, 1);
    }
    const std::int64_t tile = std::max<std::int64_t>(16, kTileScores / std::max<std::int64_t>(1, KV * G * (P + L)));
    for (std::int64_t t0 = 0; t0 < L; t0 += tile) {
      const std::int64_t n = std::min(tile, L - t0), visible = P + t0 + n;  // keys this tile may see
      const bool whole = t0 == 0 && n == L;
      const at::Tensor kt = (whole ? keys : keys.narrow(1, 0, visible)).unsqueeze(1);  // [KV, 1, S, D]
      at::Tensor scores = at::matmul(whole ? qs[s] : qs[s].narrow(2, t0, n), kt.transpose(-1, -2));  // [KV, G, n, S]
      // Query i of the tile sits at key index P + t0 + i and sees keys up to it.
      const at::Tensor key_index = at::arange(visible, p.input_ids.options());
      const at::Tensor query_index = at::arange(P + t0, P + t0 + n, p.input_ids.options());
      at::Tensor hidden_keys = key_index.unsqueeze(0) > query_index.unsqueeze(1);  // [n, S]
      if (window > 0 && window < visible) {
        hidden_keys = hidden_keys | (key_index.unsqueeze(0) <= query_index.unsqueeze(1) - window);
      }
      scores = scores.to(compute) * scale;
      if (alibi_slopes.defined()) {
        scores = scores + alibi_slopes.view({KV, G, 1, 1}).to(compute) * key_index.to(compute);
      }
      scores = SoftCap(scores, softcap).masked_fill(hidden_keys, lowest);
      const at::Tensor vt = (whole ? values : values.narrow(1, 0, visible)).unsqueeze(1);
      at::Tensor probs;
      if (sinks.defined()) {  // GPT-OSS: each head's sink joins the softmax, then is dropped
        const at::Tensor sink = sinks.to(compute).view({KV, G, 1, 1}).expand({KV, G, n, 1});
        probs = at::softmax(at::cat({scores, sink}, -1), -1).narrow(-1, 0, scores.size(-1)).to(v.scalar_type());
      } else {
        probs = at::softmax(scores, -1).to(v.scalar_type());
      }
      if (dropout > 0) probs = at::dropout(probs, dropout, /*train=*/true);
      outputs.push_back(at::matmul(probs, vt));
    }
  }
  return outputs.size() == 1 ? outputs[0] : at::cat(outputs, 2);
}

}  // namespace

at::Tensor CausalLM::PackedHidden(const PackedSequences& staged) const {
  // Token ids may be staged on the host: they follow the model's device.
  PackedSequences packed = staged;
  packed.input_ids = staged.input_ids.to(device());
  packed.position_ids = staged.position_ids.to(device());
  CheckPacked(packed);
  const std::int64_t N = packed.input_ids.size(0);
  BeginRouterForward([&] { return PackedTokenWeights(packed); });  // set_record_router
  const auto end_router = absl::MakeCleanup([this] { EndRouterForward(); });
  // D: each head's query/key width, Dv its value width (both head_dim but under MLA).
  const std::int64_t H = config_.num_attention_heads, KV = config_.attention_kv_heads();
  const std::int64_t G = H / KV, D = config_.qk_head_dim(), Dv = config_.value_head_dim();

  // cos/sin [N, 1, D]: broadcast over heads of [N, heads, D].
  auto packed_rope = [&](bool local) {
    auto [cos, sin] = RopeCosSin(packed.position_ids.unsqueeze(0), local);
    return std::pair{cos.squeeze(0).transpose(0, 1), sin.squeeze(0).transpose(0, 1)};
  };
  if (config_.mamba) {  // state-space layers, one sequence at a time; a continuation starts from its prefix's states
    std::vector<std::int64_t> lengths;
    for (std::int64_t s = 0; s < packed.num_sequences(); ++s) lengths.push_back(packed.length(s));
    at::Tensor h = Embed(packed.input_ids, packed.position_ids, DropoutNow());
    for (size_t i = 0; i < layers_.size(); ++i) {
      auto layer = [this, i, packed, lengths](at::Tensor h) {
        const std::vector<at::Tensor> pieces = h.split_with_sizes(lengths, 0);
        std::vector<at::Tensor> convs(pieces.size()), ssms(pieces.size()), outs;
        for (std::int64_t s = 0; s < packed.num_sequences(); ++s) {
          const std::int64_t pre = packed.prefix_of(s);
          at::Tensor conv = pre >= 0 ? convs[static_cast<size_t>(pre)]
                                     : at::zeros({1, config_.intermediate_size, config_.conv_kernel - 1}, options());
          at::Tensor ssm = pre >= 0 ? ssms[static_cast<size_t>(pre)]
                                    : at::zeros({1, config_.intermediate_size, config_.state_size},
                                                options().dtype(ComputeDtype(dtype_)));
          outs.push_back(MambaLayer(static_cast<std::int64_t>(i), pieces[static_cast<size_t>(s)].unsqueeze(0), at::Tensor(),
                                    &conv, &ssm)
                             .squeeze(0));
          convs[static_cast<size_t>(s)] = conv;
          ssms[static_cast<size_t>(s)] = ssm;
        }
        return outs.size() == 1 ? outs[0] : at::cat(outs, 0);
      };
      h = runner_ != nullptr ? runner_->Run(static_cast<std::int64_t>(i), h, layer) : layer(h);
    }
    return RmsNorm(h, final_norm_, config_).to(dtype_);
  }
  const auto [cos_global, sin_global] = packed_rope(false);
  const auto [cos_local, sin_local] = local_inv_freq_.defined() ? packed_rope(true) : std::pair<at::Tensor, at::Tensor>{};
  const bool drop = DropoutNow();
  at::Tensor h = Embed(packed.input_ids, packed.position_ids, drop);  // [N, hidden]
  for (size_t i = 0; i < layers_.size(); ++i) {
    const bool local = config_.uses_local_rope(static_cast<std::int64_t>(i));  // Gemma 3's windowed layers
    const at::Tensor& cos = local ? cos_local : cos_global;
    const at::Tensor& sin = local ? sin_local : sin_global;
    // Everything the layer needs, by value: a runner may call it again in backward.
    auto layer = [this, i, N, H, KV, G, D, Dv, cos = cos, sin = sin, packed, drop](at::Tensor h) {
      const Layer& l = layers_[i];
      // OPT-350m: no norm before the attention (its norm follows the residual add, LayerTail).
      at::Tensor x = config_.post_layer_norm ? h : PreNorm(h, l.input_norm, l.input_norm_bias, config_);
      const auto li = static_cast<std::int64_t>(i);
      at::Tensor q, k, v;  // [N, heads, D or Dv]
      if (config_.mla()) {  // DeepSeek-V3's latent projections
        const std::array<at::Tensor, 3> qkv = LatentQkv(li, x, cos, sin);
        q = qkv[0];
        k = qkv[1];
        v = qkv[2];
      } else {
        // q, k and v in one matmul over the concatenated weights.
        at::Tensor qkv_bias = config_.attention_bias ? at::cat({l.q_bias, l.k_bias, l.v_bias}) : at::Tensor();
        const std::vector<at::Tensor> qkv =
            internal::Linear(x, at::cat({l.q, l.k, l.v}), qkv_bias).split_with_sizes({H * D, KV * D, KV * D}, 1);
        q = ClipQkv(AddDelta(li, LinearSite::kQ, x, l.q, l.q_bias, qkv[0]));
        k = ClipQkv(AddDelta(li, LinearSite::kK, x, l.k, l.k_bias, qkv[1]));
        v = ClipQkv(AddDelta(li, LinearSite::kV, x, l.v, l.v_bias, qkv[2])).view({N, KV, D});
        if (config_.qk_norm && config_.qk_norm_over_heads) {  // OLMo 2: over the whole projection
          q = RmsNorm(q, l.q_norm, config_);
          k = RmsNorm(k, l.k_norm, config_);
        }
        q = q.view({N, H, D});
        k = k.view({N, KV, D});
        if (config_.qk_layer_norm) {  // Cohere: LayerNorm over each head's D dims, a weight per head (Phi: shared)
          q = HeadLayerNorm(q, l.q_norm, l.q_norm_bias, config_.rms_norm_eps);
          k = HeadLayerNorm(k, l.k_norm, l.k_norm_bias, config_.rms_norm_eps);
        } else if (config_.qk_norm && !config_.qk_norm_over_heads) {  // Qwen3: RMSNorm over each head's D dims, before RoPE
          q = RmsNorm(q, l.q_norm, config_);
          k = RmsNorm(k, l.k_norm, config_);
        }
        if (config_.uses_rope(static_cast<std::int64_t>(i))) {  // SmolLM3's NoPE layers skip it
          q = ApplyRope(q, cos, sin);
          k = ApplyRope(k, cos, sin);
        }
      }
      // [KV, G, N, D] queries and [KV, N, D] keys/values: each sequence a slice of N.
      q = q.view({N, KV, G, D}).permute({1, 2, 0, 3}).contiguous();
      k = k.permute({1, 0, 2}).contiguous();
      v = v.permute({1, 0, 2}).contiguous();
      at::Tensor attn = PackedAttention(q, k, v, packed, config_.attention_scale(static_cast<std::int64_t>(i)), config_.attn_logit_softcapping, ComputeDtype(dtype_),
                                        config_.window_of(li), drop ? config_.attention_dropout : 0.0, alibi_slopes_, l.sinks);
      attn = attn.permute({2, 0, 1, 3}).reshape({N, H * Dv});
      return LayerTail(li, h, x, attn, /*fuse_gate_up=*/true, drop);
    };
    h = runner_ != nullptr ? runner_->Run(static_cast<std::int64_t>(i), h, layer) : layer(h);
  }
  return FinalHidden(h);
}

}  // namespace posttrain
