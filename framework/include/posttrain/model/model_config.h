// The architecture of a Hugging Face Llama-family causal LM, as config.json holds it.
//
// Covers LlamaForCausalLM (incl. `rope_scaling` {"rope_type": "llama3"}, "linear",
// Phi-3.5's "longrope", YaRN's "yarn" and dynamic NTK's "dynamic"),
// MistralForCausalLM (sliding window on every layer), Qwen2ForCausalLM (q/k/v bias)
// and Qwen3ForCausalLM (q/k norms), both with their per-layer sliding window, and GemmaForCausalLM
// (RMSNorm scaled by 1 + weight, embeddings scaled by sqrt(hidden_size), GELU) and
// SmolLM3ForCausalLM (Llama with NoPE layers: no RoPE in every 4th layer) and
// Phi3ForCausalLM (Mistral's maths with q/k/v and gate/up each stored as one fused
// projection) and Gemma2ForCausalLM (Gemma's plus sandwich norms, soft-capped
// attention scores and logits, query_pre_attn_scalar, windows on alternate layers)
// and Gemma3ForCausalLM (model_type gemma3_text: Gemma 2's layout with q/k norms, a
// separate RoPE base on the windowed layers, five windowed layers in six) and
// Olmo2ForCausalLM (OLMo 2: norms after each sublayer instead of before, q/k norms
// over the whole projection) and GraniteForCausalLM (Llama's maths with four
// multipliers: embeddings, attention scores, residual branches, logits) and the
// mixtures of experts MixtralForCausalLM (Mistral's attention), Qwen2MoeForCausalLM
// (Qwen2's, with a shared expert) and Qwen3MoeForCausalLM (Qwen3's), and
// GPTNeoXForCausalLM (Pythia: LayerNorms with biases, biases on every projection, a
// GELU MLP without gate, attention and MLP in parallel off one residual, RoPE on
// rotary_pct of each head), and GPT2LMHeadModel (GPT-2: GPT-NeoX's LayerNorms and
// biases with sequential residuals, learned absolute position embeddings instead of
// RoPE, GELU-tanh, tied embeddings) and OPTForCausalLM (OPT: GPT-2's layer with ReLU,
// its learned positions offset by 2) and DeepseekV3ForCausalLM (multi-head latent
// attention, see kv_lora_rank, with GLM-4.5's router: see router_sigmoid) and the
// state-space models MambaForCausalLM and FalconMambaForCausalLM (see mamba).
// Both RoPE layouts are read: transformers 4's rope_theta / rope_scaling and
// transformers 5's rope_parameters.
//
//   POSTTRAIN_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJsonFile("m/config.json"));
//   nlohmann::json out = config.ToJson();   // what transformers reads back
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace posttrain {

struct RopeScaling {
  std::string rope_type;  // "llama3", "linear", "longrope", "yarn" or "dynamic" (others are refused at load)
  double factor = 8.0;    // linear: positions are divided by it; llama3 also uses the fields below
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  std::int64_t original_max_position_embeddings = 8192;
  // longrope (Phi-3.5, Phi-3 128k): frequency i is divided by short_factor[i], or by
  // long_factor[i] in a forward whose largest position + 1 exceeds
  // original_max_position_embeddings; cos and sin are multiplied by
  // attention_factor (default sqrt(1 + ln f / ln original) with f = factor, itself
  // max_position_embeddings / original_max_position_embeddings unless given).
  std::vector<double> short_factor, long_factor;
  double attention_factor = 1.0;
  // yarn (transformers' _compute_yarn_parameters, YaRN "NTK-by-parts"): frequency i
  // is blended between θ_i (extrapolation) and θ_i / factor (interpolation) by a
  // linear ramp over the dimensions between those that turn beta_fast and
  // beta_slow times within original_max_position_embeddings (0: unset, then
  // max_position_embeddings), bounds floored/ceiled when truncate; cos and sin are
  // multiplied by attention_factor (default 0.1 ln factor + 1, or mscale's ratio
  // mscale_factor(mscale) / mscale_factor(mscale_all_dim) when both are set).
  double beta_fast = 32.0, beta_slow = 1.0;
  bool truncate = true;
  // yarn's mscale_all_dim (DeepSeek-V3; 0: unset): multi-head latent attention's
  // scores are also scaled by (0.1 mscale_all_dim ln factor + 1)² when factor > 1.
  double mscale = 0.0, mscale_all_dim = 0.0;
  // dynamic (NTK-aware, transformers' _compute_dynamic_ntk_parameters): a forward
  // whose largest position + 1 = L exceeds max_position_embeddings M rotates with
  // base θ · (factor · L / M − (factor − 1))^(d / (d − 2)); else plain RoPE.
};

// The MLP's activation on the gate projection (transformers' ACT2FN names):
// kSilu "silu"/"swish"; kGelu "gelu" (exact, erf); kGeluTanh "gelu_pytorch_tanh" /
// "gelu_new" (0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))); kRelu "relu" (OPT).
enum class Activation { kSilu, kGelu, kGeluTanh, kRelu };
std::optional<Activation> ActivationOf(const std::string& hidden_act);

struct ModelConfig {
  std::string model_type = "llama";           // "llama", "mistral", "qwen2", "qwen3", "gemma", "smollm3", "phi3", "gemma2", "gemma3_text", "olmo2", "granite", "mixtral", "qwen2_moe", "qwen3_moe", "gpt_neox", "gpt2", "opt", "cohere", "cohere2", "bloom", "phi", "gptj", "stablelm", "starcoder2", "glm4_moe", "gpt_oss", "deepseek_v3", "mamba", "falcon_mamba"
  std::string architecture = "LlamaForCausalLM";
  std::int64_t vocab_size = 32000;
  std::int64_t hidden_size = 4096;
  std::int64_t intermediate_size = 11008;
  std::int64_t num_hidden_layers = 32;
  std::int64_t num_attention_heads = 32;
  std::int64_t num_key_value_heads = 32;
  std::int64_t head_dim = 128;                // hidden_size / num_attention_heads unless set
  std::int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;                 // the norms' eps (GPT-NeoX: layer_norm_eps)
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;                // q/k/v biases (Qwen2: true)
  bool qk_norm = false;                       // per-head RMSNorm of q and k before RoPE (Qwen3)
  // OLMo 2: q_norm / k_norm normalise the whole q and k projections (weights
  // [heads · head_dim]), before the split into heads.
  bool qk_norm_over_heads = false;
  // OLMo 2: no input_layernorm and no norm before the MLP; with sandwich_norms, the
  // sublayers' outputs are normalised (post_attention_layernorm,
  // post_feedforward_layernorm) before each residual add.
  bool pre_norms = true;
  // OLMo 2: the norm weight multiplies the fp32-normalised values before the cast
  // back to the model's dtype (Olmo2RMSNorm); Llama casts first. Same in fp32.
  bool norm_weight_in_fp32 = false;
  // Granite (GraniteConfig): embedding rows times embedding_multiplier; scores
  // q·k times attention_multiplier instead of 1/sqrt(head_dim); each sublayer's
  // output times residual_multiplier before its residual add; logits divided by
  // logits_scaling. Other families: unset / 1.
  double embedding_multiplier = 1.0;
  std::optional<double> attention_multiplier;
  double residual_multiplier = 1.0;
  double logits_scaling = 1.0;
  // GPT-2's scale_attn_by_inverse_layer_idx (GPT2Attention): layer i's scores are
  // also divided by i + 1 (attention_scale(layer)).
  bool scale_attn_by_inverse_layer_idx = false;
  // Sliding-window attention: query slot t sees key slots (t - sliding_window, t]
  // (transformers' sliding-window causal mask, in cache slots) in the layers that
  // use it: every layer for Mistral; for Qwen2/Qwen3 with use_sliding_window, the
  // layers layer_types marks "sliding_attention" (by default those from
  // max_window_layers on). Unset: plain causal attention everywhere.
  std::optional<std::int64_t> sliding_window;
  std::vector<bool> sliding_layers;  // one flag per layer; empty = every layer
  // SmolLM3: the layers that rotate q and k (no_rope_layers' 1s); the others attend
  // without positions (NoPE). Empty: every layer.
  std::vector<bool> rope_layers;
  // Gemma: every RMSNorm scales by (1 + weight), in fp32 before the cast back
  // (GemmaRMSNorm: the stored weights are offsets from 1, initialised to 0).
  bool norm_weight_offset = false;
  // Gemma: the embedding rows are multiplied by sqrt(hidden_size), that factor
  // rounded to the weights' dtype (GemmaTextScaledWordEmbedding).
  bool scale_embeddings = false;
  // Phi-3: checkpoints hold q/k/v as one self_attn.qkv_proj (rows q, then k, then v)
  // and gate/up as one mlp.gate_up_proj (gate rows, then up rows); the model holds
  // one tensor per projection (FuseProjections / SplitFusedProjections convert).
  bool fused_projections = false;
  // Gemma 2: post_attention_layernorm normalises the attention's output before the
  // residual add, and pre_/post_feedforward_layernorm surround the MLP (which
  // post_attention_layernorm precedes in the other families).
  bool sandwich_norms = false;
  // Gemma 2: attention scores are q·k / sqrt(query_pre_attn_scalar) (unset:
  // sqrt(head_dim)); a soft cap c > 0 maps scores (before the mask) and final
  // logits (before any temperature) through c · tanh(x / c). 0: no cap.
  std::optional<double> query_pre_attn_scalar;
  double attn_logit_softcapping = 0.0;
  double final_logit_softcapping = 0.0;
  // Gemma 3: the sliding-window layers rotate q and k with this base
  // (rope_local_base_freq) and no scaling; the others with rope_theta and
  // rope_scaling. Unset: one RoPE for every layer.
  std::optional<double> local_rope_theta;
  // Mixture of experts (Mixtral, Qwen2-MoE, Qwen3-MoE; transformers'
  // MixtralSparseMoeBlock and Qwen2Moe/Qwen3MoeSparseMoeBlock): in each layer that
  // is_moe_layer marks, the MLP is num_experts SwiGLU experts of width
  // moe_intermediate_size and a router [num_experts, hidden_size]. A token x goes
  // through the num_experts_per_tok experts of largest p = softmax(router · x) (in
  // fp32), their outputs summed weighted by p, renormalised to sum 1 when
  // norm_topk_prob (Mixtral: always). Qwen2-MoE adds a shared expert of width
  // shared_expert_intermediate_size, times sigmoid(shared_expert_gate · x). The
  // other layers keep the dense MLP of intermediate_size. num_experts 0: dense only.
  std::int64_t num_experts = 0;               // Mixtral's num_local_experts
  std::int64_t num_experts_per_tok = 0;
  std::int64_t moe_intermediate_size = 0;     // Mixtral: its intermediate_size
  bool norm_topk_prob = false;
  std::int64_t shared_expert_intermediate_size = 0;  // 0: no shared expert
  bool shared_expert_gate = false;            // Qwen2-MoE: sigmoid(shared_expert_gate · x) times it
  // The routers' load-balancing loss (transformers' load_balancing_loss_func, the
  // Switch Transformer's: Fedus et al. 2021) for the softmax routers (Mixtral,
  // Qwen2-MoE, Qwen3-MoE, GPT-OSS): with output_router_logits, training adds
  // router_aux_loss_coef · L_aux to the loss, in the trainers TRL adds it in (see
  // CausalLM::set_record_router). Defaults: 0.001 (GPT-OSS 0.9). Refused true for
  // the sigmoid routers (GLM-4.5, DeepSeek-V3: transformers computes none).
  bool output_router_logits = false;
  double router_aux_loss_coef = 0.001;
  // GLM-4.5 (Glm4MoeTopkRouter, Glm4MoeMoE; DeepSeek-V3 routes alike): with
  // router_sigmoid an expert's score is sigmoid(router · x), router and x in fp32;
  // the choice adds the router's e_score_correction_bias (a tensor of the
  // checkpoint that takes no gradient), keeps the topk_group of n_group expert
  // groups whose two best scores sum highest (the others' scores become 0), then
  // the num_experts_per_tok best; their weights are their scores without the bias,
  // divided by their sum + 1e-20 when norm_topk_prob, times routed_scaling_factor.
  // Its shared experts (mlp.shared_experts, n_shared_experts of
  // moe_intermediate_size: one SwiGLU of the summed width) are added ungated.
  bool router_sigmoid = false;
  // GPT-OSS (GptOssMLP, GptOssAttention): every layer's experts are three fused
  // tensors with biases, mlp.experts.gate_up_proj [E, hidden, 2 I] (gate and up
  // columns interleaved), down_proj [E, I, hidden]; an expert computes
  // ((clamp(up, ±swiglu_limit) + 1) · g·sigmoid(1.702 g)) with g = min(gate,
  // swiglu_limit). The router (mlp.router, with a bias) keeps the top k logits and
  // softmaxes them. Each attention head has a learned sink logit (self_attn.sinks)
  // in its softmax's denominator: p_j = exp(s_j) / (Σ exp(s) + exp(sink)).
  bool gpt_oss = false;
  double swiglu_limit = 7.0;
  // DBRX (DbrxForCausalLM; model_type "dbrx", its config nesting attn_config and
  // ffn_config): Llama's layer with bias-free LayerNorms (eps 1e-5), q/k/v clamped to
  // [-clip_qkv, clip_qkv] after the projection, and an MoE MLP in every layer whose
  // top-k softmax weights are divided by their p-norm, p = topk_norm_p
  // (moe_normalize_expert_weights; 1: their sum, as norm_topk_prob; unset in the
  // config: norm_topk_prob false). In training (dropout on) router_jitter_eps > 0
  // multiplies the MoE input, which router and experts both read, by noise
  // uniform in [1 - eps, 1 + eps] (moe_jitter_eps). Its load-balancing loss reads
  // the softmax of the router's probabilities (DbrxRouter returns probabilities
  // where load_balancing_loss_func expects logits): dbrx. Checkpoints:
  // transformer.wte, transformer.blocks.<i>.norm_attn_norm.{norm_1, attn.Wqkv,
  // attn.out_proj, norm_2}, .ffn.router.layer, .ffn.experts.mlp.{w1, v1, w2} (each
  // [E · ffn_hidden_size, d_model]; expert e's gate, up and down^T rows e·I ..),
  // transformer.norm_f, lm_head (FuseProjections / SplitFusedProjections convert).
  bool dbrx = false;
  double topk_norm_p = 1.0;
  double router_jitter_eps = 0.0;
  // q, k and v clamped to [-clip_qkv, clip_qkv] after their projections (DBRX's
  // attn_config.clip_qkv, OLMo's clip_qkv); 0: no clamp.
  double clip_qkv = 0.0;
  // OLMo (OlmoForCausalLM, model_type "olmo"): Llama's layer whose norms (before
  // attention, before the MLP, the final one) are LayerNorms without parameters,
  // computed in fp32 with eps 1e-5 (OlmoLayerNorm); its checkpoints hold no norm
  // tensors.
  bool norm_without_parameters = false;
  std::int64_t n_group = 1;
  std::int64_t topk_group = 1;
  // DeepSeek-V3 (DeepseekV3Attention: multi-head latent attention, MLA), when
  // kv_lora_rank > 0. Per layer, with D_qk = qk_nope_head_dim + qk_rope_head_dim:
  //   q = q_proj(x), or with q_lora_rank > 0 q_b_proj(RMSNorm(q_a_proj(x)))   [heads · D_qk]
  //   [c, k_rot] = kv_a_proj_with_mqa(x)              [kv_lora_rank + qk_rope_head_dim]
  //   [k_nope, v] of each head = kv_b_proj(RMSNorm(c))  [heads · (qk_nope_head_dim + v_head_dim)]
  // A head's query is [q_nope, q_rot], its key [k_nope, k_rot] with one k_rot shared
  // by every head; RoPE turns q_rot and k_rot only (head_dim is qk_rope_head_dim, as
  // DeepseekV3Config sets it; rope_interleaved: rope_interleave, rotating adjacent
  // pairs, the same scores as transformers' de-interleave then rotate-half). Every
  // head has its own key and value: num_key_value_heads is kept for config.json and
  // not used. The two latent RMSNorms (q_a_layernorm, kv_a_layernorm) use eps 1e-6,
  // DeepseekV3RMSNorm's default. attention_bias puts biases on q_a_proj,
  // kv_a_proj_with_mqa and o_proj [hidden, heads · v_head_dim]. See attention_scale().
  std::int64_t q_lora_rank = 0;  // 0: q_proj (DeepseekV3Config's null)
  std::int64_t kv_lora_rank = 0;
  std::int64_t qk_nope_head_dim = 0;
  std::int64_t qk_rope_head_dim = 0;
  std::int64_t v_head_dim = 0;
  // Mamba and FalconMamba (MambaForCausalLM, FalconMambaForCausalLM; mamba true): no
  // attention and no positions. Layer i is h + mixer(RMSNorm(h)) (MambaBlock; the
  // residual stream in fp32 with residual_in_fp32) and its mixer (MambaMixer's
  // slow_forward) on x [T, hidden_size], I = intermediate_size, N = state_size:
  //   [u, z] = in_proj(x)                                         [2 I]
  //   u = act(conv1d(u)): causal, depthwise, conv_kernel taps, its bias with use_conv_bias
  //       (padding positions zeroed before and after it)
  //   [δ, B, C] = x_proj(u)                         [time_step_rank, N, N]
  //       FalconMamba (mamba_bc_norm): each RMS-normalised without weight, eps mixer_rms_eps
  //   Δ = softplus(dt_proj(δ)) [I],  A = -exp(A_log) [I, N]
  //   s_t = exp(Δ_t A) ⊙ s_{t-1} + (Δ_t ⊗ B_t) u_t,  y_t = s_t C_t + D ⊙ u_t    (s in fp32)
  //   out = out_proj(y ⊙ act(z))
  // in_proj and out_proj have biases with mamba_use_bias (the config's use_bias).
  // num_attention_heads, num_key_value_heads and head_dim are 1, 1 and hidden_size,
  // max_position_embeddings unbounded (2^20): unused.
  bool mamba = false;
  bool mamba_bc_norm = false;
  std::int64_t state_size = 16;
  std::int64_t conv_kernel = 4;
  std::int64_t time_step_rank = 0;
  double expand = 2.0;
  bool use_conv_bias = true;
  bool mamba_use_bias = false;
  bool residual_in_fp32 = true;
  double mixer_rms_eps = 1e-6;
  double routed_scaling_factor = 1.0;
  std::vector<bool> dense_mlp_layers;         // Qwen's mlp_only_layers and decoder_sparse_step; empty: none
  // GPT-NeoX (GPTNeoXForCausalLM). Its checkpoints name the tensors gpt_neox.* and
  // hold q/k/v as one attention.query_key_value whose rows interleave the heads
  // ([q, k, v] of head 0, then of head 1, ...); the model holds them under Llama's
  // names, one tensor per projection (SplitFusedProjections / FuseProjections convert).
  // layer_norm: every norm is LayerNorm (x - mean) / sqrt(var + eps) · weight + bias,
  // not RMSNorm. parallel_residual: h + attn(ln1(h)) + mlp(ln2(h)) (GPT-NeoX's
  // use_parallel_residual) instead of the two residual adds in sequence.
  // gated_mlp false: the MLP is down(act(up(x))), no gate. mlp_bias: up and down
  // have biases. output_bias: o_proj has one (GPT-NeoX's attention.dense).
  bool layer_norm = false;
  bool parallel_residual = false;
  bool gated_mlp = true;
  bool mlp_bias = false;
  bool output_bias = false;
  // GPT-2 (GPT2LMHeadModel): learned absolute positions, a table
  // model.embed_positions.weight [max_position_embeddings, hidden_size] (the
  // checkpoint's wpe) whose row p is added to the embedding of the token at position
  // p; no RoPE (uses_rope is false). Its checkpoints name the tensors transformer.*
  // (or, the oldest, without the prefix) and store each projection as a Conv1D weight
  // [in, out], the transpose of nn.Linear's, q/k/v as one attn.c_attn whose output
  // columns are q, then k, then v (FuseProjections / SplitFusedProjections convert).
  bool learned_positions = false;
  // Cohere (CohereForCausalLM): LayerNorms without a bias (layer_norm_bias false),
  // one norm per layer whose output both parallel branches read (one_norm_per_layer:
  // no post_attention_layernorm; h + attn(ln(h)) + mlp(ln(h))), RoPE on adjacent pairs
  // (rope_interleaved: dimensions (2i, 2i + 1) rotate together by frequency i, cos/sin
  // repeat_interleave'd, where the others rotate (i, i + D/2) by frequency i), and the
  // logits times logit_scale (0.0625 by default). use_qk_norm: qk_layer_norm, a
  // bias-free LayerNorm over each head's D dimensions with weights [heads, head_dim]
  // (q_norm.weight [num_attention_heads, head_dim], k_norm.weight
  // [num_key_value_heads, head_dim]), before RoPE. Other families: true / false / 1.
  // StableLM (StableLmForCausalLM) has one_norm_per_layer with use_parallel_residual,
  // and its qk_layernorm is qk_layer_norm, its checkpoints holding one weight per head
  // (self_attn.q_layernorm.norms.<h>.weight [head_dim]).
  bool layer_norm_bias = true;
  // BLOOM (BloomForCausalLM): no position embedding; each head h adds
  // slope_h · (key position) to its scores (ALiBi; transformers' build_alibi_tensor:
  // slopes 2^(-8 i / n) for the largest power of two n <= heads, then the odd powers of
  // the next one; a key's position is its index among the sequence's unpadded tokens),
  // and the embeddings go through a LayerNorm (embedding_layer_norm:
  // model.embed_norm.weight / .bias, the checkpoint's word_embeddings_layernorm).
  bool alibi = false;
  bool embedding_layer_norm = false;
  // Phi (PhiForCausalLM, Phi-1/1.5/2): the LM head has a bias, lm_head.bias [vocab_size]
  // (logits = h Wᵀ + b). Its layer is Cohere's parallel one with LayerNorms that have
  // biases, biases on every projection and the ungated MLP fc2(act(fc1(x))).
  // GPT-J (GPTJForCausalLM) is the same layer without q/k/v/out_proj biases, RoPE on
  // adjacent pairs (rope_interleaved) of each head's first rotary_dim dimensions.
  bool lm_head_bias = false;
  bool one_norm_per_layer = false;
  bool rope_interleaved = false;
  bool qk_layer_norm = false;
  // Phi's qk_layernorm: qk_layer_norm as one nn.LayerNorm with a bias over head_dim,
  // shared by every head (self_attn.q_layernorm / k_layernorm .weight and .bias
  // [head_dim]; the model's q_norm / k_norm), before RoPE.
  bool qk_layer_norm_shared = false;
  double logit_scale = 1.0;
  // OPT (OPTLearnedPositionalEmbedding): position p reads row p + position_offset
  // (2) of a table of max_position_embeddings + 2 rows. GPT-2: 0.
  std::int64_t position_offset = 0;
  // OPT-350m (do_layer_norm_before false): each layer's norms follow its residual adds,
  // h = LN1(h + attn(h)), h = LN2(h + mlp(h)) (LN1 is input_layernorm, the
  // checkpoint's self_attn_layer_norm; LN2 post_attention_layernorm, its
  // final_layer_norm), and the decoder has no final norm.
  bool post_layer_norm = false;
  // OPT-350m: embeddings and the LM head are word_embed_proj_dim wide (0: hidden_size);
  // model.project_in.weight [hidden, it] maps token embeddings in (before the
  // positions are added), model.project_out.weight [it, hidden] maps the last hidden
  // states out, and Hidden's outputs are that wide (output_size()).
  std::int64_t word_embed_proj_dim = 0;
  // The width of Hidden's outputs, which the LM head and classifier heads read:
  // word_embed_proj_dim if set, else hidden_size.
  std::int64_t output_size() const { return word_embed_proj_dim > 0 ? word_embed_proj_dim : hidden_size; }
  // Dropout in training, as transformers' modules apply it in train mode:
  // attention_dropout on the attention probabilities (every family's
  // attention_dropout; GPT-2's attn_pdrop), residual_dropout on each sublayer's
  // output before its residual add (GPT-NeoX's hidden_dropout, GPT-2's resid_pdrop),
  // embedding_dropout on the input embeddings (GPT-2's embd_pdrop). Probabilities in
  // [0, 1]. The model applies them only where CausalLM::set_dropout switched them on,
  // and only in forwards that build a graph (see CausalLM::set_dropout).
  double attention_dropout = 0.0;
  double residual_dropout = 0.0;
  double embedding_dropout = 0.0;
  // Phi-3 (Phi-4-mini): RoPE on the first int(head_dim · partial_rotary_factor)
  // dimensions of each head; the others pass through unrotated.
  double partial_rotary_factor = 1.0;
  double initializer_range = 0.02;
  std::string hidden_act = "silu";            // see Activation (Gemma: gelu_pytorch_tanh)
  std::string torch_dtype = "float32";
  std::optional<std::int64_t> bos_token_id;
  std::vector<std::int64_t> eos_token_ids;    // config's eos_token_id (int or list)
  std::optional<std::int64_t> pad_token_id;
  // For LlamaForSequenceClassification (reward models): number of labels (0 = LM).
  std::int64_t num_labels = 0;

  // Parses and checks config.json (InvalidArgument naming the key).
  Activation activation() const;
  // The factor on q·k: attention_multiplier (Granite), else 1 / sqrt(query_pre_attn_scalar or head_dim);
  // MLA: 1 / sqrt(qk_head_dim()), times mscale² = (0.1 mscale_all_dim ln factor + 1)² under a
  // rope_scaling with mscale_all_dim and factor > 1 (DeepseekV3Attention.scaling).
  double attention_scale() const;
  // Decoder layer `layer`'s factor on q·k: attention_scale(), divided by layer + 1
  // under GPT-2's scale_attn_by_inverse_layer_idx.
  double attention_scale(std::int64_t layer) const {
    return scale_attn_by_inverse_layer_idx ? attention_scale() / static_cast<double>(layer + 1) : attention_scale();
  }
  // Multi-head latent attention (DeepSeek-V3: kv_lora_rank > 0).
  bool mla() const { return kv_lora_rank > 0; }
  // The width of each head's queries and keys, and of its values: head_dim, or under
  // MLA qk_nope_head_dim + qk_rope_head_dim and v_head_dim.
  std::int64_t qk_head_dim() const { return mla() ? qk_nope_head_dim + qk_rope_head_dim : head_dim; }
  std::int64_t value_head_dim() const { return mla() ? v_head_dim : head_dim; }
  // The key/value heads attention runs with: num_key_value_heads, or under MLA one per query head.
  std::int64_t attention_kv_heads() const { return mla() ? num_attention_heads : num_key_value_heads; }
  // The window `layer` attends within (sliding_window), or 0 for full causal attention.
  std::int64_t window_of(std::int64_t layer) const;
  // Whether `layer` applies RoPE to q and k (false for SmolLM3's NoPE layers and for
  // models with other positions: GPT-2's and OPT's learned ones, BLOOM's ALiBi).
  bool uses_rope(std::int64_t layer) const;
  // Whether the model rotates with RoPE at all (not learned positions, not ALiBi).
  bool has_rope() const { return !learned_positions && !alibi && !mamba; }
  // The d of RoPE's frequencies θ^(-2i/d), i < ceil(d/2): int(head_dim · partial_rotary_factor).
  std::int64_t rope_freq_dim() const { return static_cast<std::int64_t>(static_cast<double>(head_dim) * partial_rotary_factor); }
  // The dimensions of each head that RoPE rotates: rope_freq_dim(); GLM-4.5 and Phi-3
  // rotate as many as cos has (rotary_dim = cos.shape[-1]), so an odd d rounds up.
  std::int64_t rotary_dim() const {
    const std::int64_t d = rope_freq_dim();
    return (model_type == "glm4_moe" || model_type == "phi3") && d % 2 != 0 ? d + 1 : d;
  }
  // Whether `layer`'s MLP is a mixture of experts (see num_experts).
  bool is_moe_layer(std::int64_t layer) const {
    return num_experts > 0 && (dense_mlp_layers.empty() || layer < 0 ||
                               layer >= static_cast<std::int64_t>(dense_mlp_layers.size()) || !dense_mlp_layers[layer]);
  }
  // Where an MoE layer's weights live inside model.layers.<i>: "block_sparse_moe"
  // (Mixtral: experts.<e>.w1/w3/w2 for gate/up/down) or "mlp" (Qwen: experts.<e>.gate_proj/up_proj/down_proj).
  const char* moe_module() const { return model_type == "mixtral" ? "block_sparse_moe" : "mlp"; }
  // The shared expert's module inside moe_module(): Qwen2-MoE's shared_expert,
  // GLM-4.5's shared_experts.
  const char* shared_expert_module() const { return shared_expert_gate ? "shared_expert" : "shared_experts"; }
  // Whether `layer` rotates with local_rope_theta (Gemma 3's windowed layers).
  bool uses_local_rope(std::int64_t layer) const { return local_rope_theta.has_value() && window_of(layer) > 0; }

  static absl::StatusOr<ModelConfig> FromJson(const nlohmann::json& json);
  static absl::StatusOr<ModelConfig> FromJsonFile(const std::string& path);
  nlohmann::ordered_json ToJson() const;
};

}  // namespace posttrain
