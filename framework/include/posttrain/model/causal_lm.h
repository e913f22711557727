// A Llama-family decoder-only causal LM on plain libtorch tensors.
//
// RMSNorm, rotary position embeddings (rotate-half layout, as Hugging Face stores
// q/k), grouped-query attention, SwiGLU MLP, tied or separate lm_head, optional
// q/k/v bias (Qwen2), per-head RMSNorm of q and k before RoPE (Qwen3's q_norm /
// k_norm), Gemma's variant (RMSNorm by 1 + weight, embeddings scaled by
// sqrt(hidden_size), GELU-tanh MLP), Gemma 2's (sandwich norms, soft caps), Gemma 3's (two RoPE bases) and
// Phi-3's fused checkpoints, DeepSeek-V3's latent attention, the mixtures of experts of Mixtral, Qwen2-MoE and Qwen3-MoE and
// GPT-NeoX's layer (LayerNorms, biases, an ungated MLP, parallel residual) and GPT-2's
// (the same with sequential residuals and learned absolute positions), each with
// the dropout its config sets, in training: ModelConfig. Parameters are plain at::Tensors held by Hugging Face name, so the
// engine can own, shard and checkpoint them without the model's help.
//
//   POSTTRAIN_ASSIGN_OR_RETURN(auto model, LoadCausalLM("stories260K_hf", at::kFloat));
//   KVCache cache = model->NewCache(batch, max_total_length);
//   at::Tensor logits = model->Forward(input_ids, position_ids, attention_mask, &cache);
//
// Maths: Touvron et al. 2023 (Llama), Su et al. 2021 (RoPE, eq. 34 in the
// rotate-half form used by transformers' LlamaModel), Shazeer 2020 (SwiGLU),
// Ainslie et al. 2023 (GQA), Zhang & Sennrich 2019 (RMSNorm); numerics follow
// transformers' LlamaRMSNorm (normalise in fp32, cast back, scale).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "absl/status/statusor.h"
#include "posttrain/model/linear_adapter.h"
#include "posttrain/model/model_config.h"

namespace posttrain {

// Keys and values of past positions, one pair per layer, preallocated to
// (Mamba: per layer, keys [B, intermediate, conv_kernel - 1] the conv's last inputs
// and values [B, intermediate, state_size] the SSM state, in fp32)
// `capacity` positions: k/v [B, kv heads, capacity, D] with the config's
// attention_kv_heads() and D its qk_head_dim() for keys, value_head_dim() for values
// (num_key_value_heads and head_dim but under DeepSeek-V3's latent attention).
struct KVCache {
  std::vector<at::Tensor> keys;
  std::vector<at::Tensor> values;
  std::int64_t length = 0;  // positions filled
  std::int64_t capacity = 0;
};

// Sequences laid end to end in one stream, without padding (TRL's padding_free),
// optionally sharing prefixes. Sequence k is tokens [offsets[k], offsets[k+1]) of
// the stream; it attends causally to its own tokens and, when prefix[k] >= 0, to
// every token of sequence prefix[k] before them: a prompt computed once for all of
// its completions (DPO's chosen and rejected, GRPO's num_generations samples). A
// prefix must come earlier in the stream and have no prefix itself; positions of a
// continuation start at its prefix's length.
//
//   PackedSequences p = PackSequences({{1, 5, 6}, {1, 9}});  // 5 tokens, no padding
//   at::Tensor h = model.PackedHidden(p);                    // [5, hidden_size]
struct PackedSequences {
  at::Tensor input_ids;               // [N] int64
  at::Tensor position_ids;            // [N] int64
  std::vector<std::int64_t> offsets;  // sequences + 1 entries, offsets[0] = 0, last = N
  std::vector<std::int64_t> prefix;   // one per sequence (-1: none), or empty: none at all

  std::int64_t num_sequences() const { return static_cast<std::int64_t>(offsets.size()) - 1; }
  std::int64_t length(std::int64_t k) const { return offsets[k + 1] - offsets[k]; }
  std::int64_t prefix_of(std::int64_t k) const { return prefix.empty() ? -1 : prefix[static_cast<size_t>(k)]; }
};

// Independent sequences, positions from 0 each. Every sequence must be non-empty.
PackedSequences PackSequences(const std::vector<std::vector<std::int64_t>>& sequences);

// The seam of FSDP-style sharding (distributed/fsdp.h): with a runner installed,
// the model runs each decoder layer (a unit) through it, and the runner makes the
// layer's parameters whole around the call (and again for its backward) while
// keeping only a shard of them otherwise. The model never knows which.
class LayerRunner {
 public:
  virtual ~LayerRunner() = default;
  // Returns layer(input) for decoder layer `index`; `layer` reads the layer's
  // parameters (named "model.layers.<index>.*") and may be called again in
  // backward, so it must capture what it needs by value.
  virtual at::Tensor Run(std::int64_t index, const at::Tensor& input,
                         std::function<at::Tensor(const at::Tensor&)> layer) = 0;
};

class CausalLM {
 public:
  // Random initialisation as transformers does (normal(0, initializer_range) for
  // linear and embedding weights, ones for norms, zeros for biases), seeded.
  static absl::StatusOr<std::unique_ptr<CausalLM>> Random(const ModelConfig& config,
                                                          at::ScalarType dtype, std::uint64_t seed);
  // From tensors by HF name; every expected tensor must be present with its shape
  // (InvalidArgument naming the tensor); tensors are converted to `dtype`.
  // `lm_head.weight` may be absent when the embeddings are tied.
  static absl::StatusOr<std::unique_ptr<CausalLM>> FromTensors(
      const ModelConfig& config, std::map<std::string, at::Tensor> tensors, at::ScalarType dtype);

  const ModelConfig& config() const { return config_; }
  at::ScalarType dtype() const { return dtype_; }
  // The device its parameters live on, and options for tensors that meet them
  // (model dtype; take .dtype(...) for ids or masks). See core/device.h.
  at::Device device() const { return embed_.device(); }
  at::TensorOptions options() const { return at::TensorOptions().device(embed_.device()).dtype(dtype_); }
  // Moves every parameter (and the RoPE table) to `device`.
  void MoveTo(at::Device device);

  // Parameters by HF name, in a fixed order (embedding, layers, norm, lm_head if
  // untied). The tensors are the model's own: setting requires_grad on them trains it.
  const std::vector<std::pair<std::string, at::Tensor>>& named_parameters() const { return params_; }
  std::vector<at::Tensor> parameters() const;
  // Elements over every parameter (a tied lm_head counted once).
  std::int64_t NumParameters() const;
  // A deep copy (e.g. a frozen reference model).
  std::unique_ptr<CausalLM> Clone() const;
  // Installs (or, with nullptr, removes) the runner of the decoder layers. Not
  // owned; it must outlive its use.
  void set_layer_runner(LayerRunner* runner) { runner_ = runner; }
  // Installs (or, with nullptr, removes) an adapter on the linear projections
  // (model/linear_adapter.h). Not owned; it must outlive its use.
  void set_adapter(const LinearAdapter* adapter) { adapter_ = adapter; }
  const LinearAdapter* adapter() const { return adapter_; }
  // The base model under an adapter: a second CausalLM sharing this one's
  // parameter tensors (no copy) without the adapter — PEFT's disable_adapter(), the
  // reference of DPO-style trainers for free. Valid while this model lives and its
  // base weights are frozen.
  std::unique_ptr<CausalLM> BaseView() const;
  // Dropout (ModelConfig::attention_dropout, residual_dropout, embedding_dropout) in
  // this model's forwards: off by default (a reference model, Clone, BaseView), on for
  // a policy that trains with it (transformers' train mode). Even when on, it applies
  // only to forwards that build a graph (grad mode on at the call): training passes;
  // generation, log-probabilities under no_grad and evaluation run without, as in
  // eval mode. Masks come from libtorch's default generator of the model's device.
  void set_dropout(bool on) { dropout_ = on; }
  bool dropout() const { return dropout_; }

  // The routers' load-balancing loss (ModelConfig::output_router_logits;
  // transformers' load_balancing_loss_func, Fedus et al. 2021, eq. 4) of the softmax
  // routers. While on, each Hidden/PackedHidden call that builds a graph (grad mode on),
  // or with `without_grad` every call (an evaluation's forwards), adds its MoE layers'
  // routing to running sums, and TakeRouterAuxLoss returns and clears
  //   L_aux = E · Σ_k Σ_e f[k, e] · P[e]
  // over the (MoE layer, token) pairs since the last take, as if their forwards were
  // one: f[k, e] the fraction of pairs whose k-th choice is expert e, P[e] the mean of
  // softmax(router logits)[e]. Tokens count as in transformers' forward of the rows
  // they stand for: padding (attention mask 0) not at all, a packed prefix once per
  // sequence continuing it (DPO's prompt, shared by chosen and rejected: twice).
  // Off by default (a reference, Clone, BaseView); the engine turns it on for the
  // trainers TRL adds the loss in (TrainerNeeds::router_aux_loss).
  void set_record_router(bool on, bool without_grad = false) {
    record_router_ = on;
    record_without_grad_ = without_grad;
  }
  // Whether a forward starting now records.
  bool records_router() const { return record_router_ && (record_without_grad_ || at::GradMode::is_enabled()); }
  // A scalar, fp32, differentiable w.r.t. the routers; undefined when nothing was
  // recorded (no MoE layer, or no forward since the last take).
  at::Tensor TakeRouterAuxLoss() const;

  KVCache NewCache(std::int64_t batch_size, std::int64_t capacity) const;

  // input_ids, position_ids: [B, T] int64. attention_mask: [B, S] with
  // S = past + T (cache->length + T, or T without a cache), 1 for real tokens, 0 for
  // padding; undefined = all ones. Returns hidden states [B, T, output_size()] after
  // the final norm, in the model dtype. With a cache, appends this call's keys and
  // values to it (InvalidArgument-style c10::Error if it would overflow).
  // This is the path of generation (KV cache) and of reference tests; training
  // passes go through PackedHidden.
  at::Tensor Hidden(const at::Tensor& input_ids, const at::Tensor& position_ids,
                    const at::Tensor& attention_mask, KVCache* cache) const;
  // Logits [B, T, vocab_size] in fp32 (fp64 for an fp64 model), lm_head on Hidden
  // (soft-capped where the config says: Gemma 2).
  at::Tensor Forward(const at::Tensor& input_ids, const at::Tensor& position_ids,
                     const at::Tensor& attention_mask, KVCache* cache) const;
  // Hidden states [N, output_size()] (after the final norm) of a padding-free stream:
  // no padding is computed and no [B, H, T, S] scores or dense mask exist. Attention
  // runs per sequence, a tile of queries at a time, each tile against only the keys
  // it may see (its prefix and its own causal past): tiles above the diagonal are
  // never computed. Equals Hidden on the same sequences padded (within rounding).
  at::Tensor PackedHidden(const PackedSequences& packed) const;

  // One token of each of B sequences through the whole model, for small-batch
  // decoding: fused loops over the weights, each weight row read once for all B,
  // instead of ~250 libtorch operations (model/decode_step.cc). `cache` has batch B;
  // sequence b's key/value go to slot cache->length, its attention reads slots
  // [first_slots[b], cache->length] (> 0 skips left padding); positions[b] is its
  // RoPE position. Returns fp32 logits [B, vocab_size]. Only for fp32 CPU models
  // with contiguous weights, no experts, and no adapter or one that merges into
  // weights (CanDecodeStep); not differentiable. Equals Forward on the same inputs
  // (within rounding).
  //
  // Under bf16 autocast, pass `weights` = Bf16DecodeWeights(): the products then take
  // bf16 operands, as autocast's at::linear (weights and inputs rounded to bf16), with
  // fp32 sums and fp32 results, through AVX512-BF16 dot products
  // (model/bf16_rows.h): half the bytes read per token. Norms, RoPE, attention and
  // the activation stay fp32.
  //
  // With an adapter installed, `weights` must hold its merge: Bf16DecodeWeights() or,
  // for fp32 products, MergedDecodeWeights(). The step then runs the merged model
  // (W + scaling · BA for LoRA: as sampling from PEFT's merged model, which differs
  // from the adapted forward by fp32 rounding only).
  bool CanDecodeStep() const;
  struct DecodeWeights;  // copies of the matrices DecodeStep multiplies: bf16, or merged with the adapter
  // A snapshot of the current weights (the adapter's merge folded in) for DecodeStep's
  // bf16 products (make another after they change: generation makes one per call),
  // or null where DecodeStep cannot run or the CPU lacks AVX512-BF16 (where bf16
  // products would be slower).
  std::shared_ptr<const DecodeWeights> Bf16DecodeWeights() const;
  // The installed adapter's merged weights (fp32 copies of the adapted matrices only)
  // for DecodeStep's fp32 products; null without an adapter or where DecodeStep
  // cannot run.
  std::shared_ptr<const DecodeWeights> MergedDecodeWeights() const;
  at::Tensor DecodeStep(const std::vector<std::int64_t>& tokens, const std::vector<std::int64_t>& positions,
                        const std::vector<std::int64_t>& first_slots, KVCache* cache,
                        const DecodeWeights* weights = nullptr) const;
  // lm_head on hidden states [.., hidden_size] → fp32 logits [.., vocab_size],
  // c·tanh(logits / c) with c = final_logit_softcapping > 0.
  at::Tensor Logits(const at::Tensor& hidden) const;
  // The LM head [vocab_size, hidden_size] (the embedding when tied), for losses that
  // project hidden states themselves a chunk at a time (model/token_logprobs.h),
  // and the soft cap they must apply to its logits (0: none).
  double logit_softcap() const { return config_.final_logit_softcapping; }
  // Hidden states [.., hidden_size] as those losses must project them with
  // lm_head_weight(): divided by logits_scaling (Granite's logits are
  // lm_head(h) / logits_scaling), times logit_scale (Cohere's are lm_head(h) ·
  // logit_scale), else the same tensor; with Phi's head bias, a column of ones
  // appended first ([.., hidden_size + 1]).
  at::Tensor HeadInput(const at::Tensor& hidden) const;
  // The head's weight [vocab_size, hidden_size] (the embedding when tied); with Phi's
  // bias b, [W, b] [vocab_size, hidden_size + 1], so HeadInput(h) · it = h Wᵀ + b.
  at::Tensor lm_head_weight() const;

 private:
  struct Layer {
    at::Tensor input_norm, q, k, v, o, q_bias, k_bias, v_bias, q_norm, k_norm, post_norm, gate, up, down;
    at::Tensor pre_ff_norm, post_ff_norm;  // Gemma 2's sandwich norms (post_norm then follows attention)
    // GPT-NeoX: the LayerNorms' biases, attention.dense's and the MLP's.
    at::Tensor input_norm_bias, post_norm_bias, o_bias, up_bias, down_bias;
    at::Tensor q_norm_bias, k_norm_bias;  // Phi's shared q/k LayerNorms (qk_layer_norm_shared)
    // An MoE layer (config.is_moe_layer): the router [num_experts, hidden] and each
    // expert's projections; gate/up/down then hold Qwen2-MoE's shared expert, if any.
    at::Tensor router, shared_expert_gate;
    at::Tensor router_bias;  // GLM-4.5: e_score_correction_bias [num_experts]
    // GPT-OSS: the router's bias, the fused experts and their biases, the heads' sinks.
    at::Tensor router_logit_bias, experts_gate_up, experts_gate_up_bias, experts_down, experts_down_bias, sinks;
    // DeepSeek-V3's latent attention (config.mla()): q holds q_b_proj (or q_proj), k and v stay undefined.
    at::Tensor q_a, q_a_bias, q_a_norm, kv_a, kv_a_bias, kv_a_norm, kv_b;
    // A Mamba layer's mixer (config.mamba; input_norm is its norm).
    at::Tensor in_proj, in_proj_bias, conv_w, conv_b, x_proj, dt_proj, dt_bias, a_log, d_skip, out_proj, out_proj_bias;
    std::vector<at::Tensor> expert_gate, expert_up, expert_down;
  };
  CausalLM(ModelConfig config, at::ScalarType dtype);
  void Index();  // fills layers_ / embed_ / ... from params_
  // DecodeStep's seven matrices of decoder layer `layer` (q, k, v, o, gate, up, down):
  // each the model's own (detached) and, where an installed adapter adapts it, its
  // merged weight (LinearAdapter::MergedWeight; else undefined).
  std::array<std::pair<at::Tensor, at::Tensor>, 7> DecodeMatrices(std::size_t layer) const;
  // x Wᵀ (+ b), adapted for (layer, site) (LinearAdapter::Adapt); AddDelta adapts a
  // projection `base` = x wᵀ (+ b) already computed (the fused q/k/v and gate/up products).
  at::Tensor Project(std::int64_t layer, LinearSite site, const at::Tensor& x, const at::Tensor& w,
                     const at::Tensor& b) const;
  at::Tensor AddDelta(std::int64_t layer, LinearSite site, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                      const at::Tensor& base) const;
  // cos/sin [B, 1, T, D] of the RoPE of position_ids [B, T]: the global table, or
  // with `local` Gemma 3's windowed layers' (local_rope_theta).
  std::pair<at::Tensor, at::Tensor> RopeCosSin(const at::Tensor& position_ids, bool local = false) const;
  // x [.., head_dim] rotated by cos/sin [.., rotary_dim] (broadcast): rotate-half
  // RoPE on the first rotary_dim dimensions, the rest unchanged (partial rotary).
  at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;
  // Multi-head latent attention (DeepSeek-V3, ModelConfig::kv_lora_rank) of decoder
  // layer `layer` on its normed input x [.., hidden]: q, k [.., heads, qk_head_dim]
  // and v [.., heads, v_head_dim], the last qk_rope_head_dim dimensions of q and k
  // rotated by cos/sin (broadcast to [.., heads or 1, qk_rope_head_dim]).
  std::array<at::Tensor, 3> LatentQkv(std::int64_t layer, const at::Tensor& x, const at::Tensor& cos,
                                      const at::Tensor& sin) const;
  // The mixer of Mamba layer `layer` (ModelConfig::mamba) on its normed input x [B, T,
  // hidden]: mask [B, T] (1 real, 0 padding) or undefined; *conv [B, intermediate,
  // conv_kernel - 1] the conv's inputs before these tokens (zeros: none) and *ssm [B,
  // intermediate, state_size] the state before them (fp32, fp64 for an fp64 model),
  // both replaced by those after the last token. Returns [B, T, hidden].
  at::Tensor MambaMixer(std::int64_t layer, const at::Tensor& x, const at::Tensor& mask, at::Tensor* conv,
                        at::Tensor* ssm) const;
  // Decoder layer `layer` of a Mamba model: h + mixer(norm(h)), the residual in fp32
  // with residual_in_fp32; the mixer's states as MambaMixer's.
  at::Tensor MambaLayer(std::int64_t layer, const at::Tensor& h, const at::Tensor& mask, at::Tensor* conv,
                        at::Tensor* ssm) const;
  // Whether the global RoPE table depends on a forward's length (longrope, dynamic).
  bool RopeDependsOnLength() const;
  // The global inverse frequencies [rotary_dim / 2] for a forward whose largest
  // position + 1 is `length`: longrope's long factors past its original context,
  // dynamic NTK's rescaled base past max_position_embeddings, else inv_freq_.
  at::Tensor GlobalInvFreq(std::int64_t length) const;
  // Embedding rows (Gemma: times sqrt(hidden_size); Granite: times embedding_multiplier;
  // GPT-2: plus the learned embedding of each position), then embedding dropout if
  // `dropout`. ids and positions of one shape.
  at::Tensor Embed(const at::Tensor& ids, const at::Tensor& positions, bool dropout) const;
  // The decoder's output from the last layer's h: the final norm (none for OPT-350m),
  // then OPT-350m's project_out.
  at::Tensor FinalHidden(const at::Tensor& h) const;
  // Whether a forward starting now applies dropout (set_dropout, grad mode).
  bool DropoutNow() const;
  // Router recording (set_record_router) for one forward: `weights()` gives its
  // tokens' weights [tokens], in the order SparseMoe flattens them; called only when
  // recording applies (on, grad mode on, an MoE model). EndRouterForward stops it.
  void BeginRouterForward(const std::function<at::Tensor()>& weights) const;
  void EndRouterForward() const { router_weights_ = at::Tensor(); }
  // Adds an MoE layer's routing: probs [N, E] fp32 (softmax of the router logits),
  // experts [N, k] the chosen ones; no-op outside a recorded forward.
  void RecordRouting(const at::Tensor& probs, const at::Tensor& experts) const;
  // A sublayer's output x as it is added to the residual stream: RmsNorm(x, weight)
  // with sandwich norms (Gemma 2, OLMo 2), times residual_multiplier (Granite).
  at::Tensor BranchOutput(const at::Tensor& x, const at::Tensor& weight) const;
  // The mixture-of-experts MLP of an MoE layer on x [.., hidden_size] (see
  // ModelConfig::num_experts): the same shape and dtype back. Experts are not linear
  // sites: an adapter does not reach them (as PEFT's all-linear under transformers
  // 5, whose experts are fused parameters, not nn.Linear modules).
  at::Tensor SparseMoe(const Layer& l, const at::Tensor& x) const;
  // A q, k or v projection clamped to ±config.clip_qkv (DBRX), or as it is.
  at::Tensor ClipQkv(const at::Tensor& projected) const;
  // Decoder layer `layer` after its attention: h the layer's input [.., hidden_size],
  // normed the attention's input (input_layernorm(h): Cohere's MLP reads it too), attn
  // the attention's heads merged [.., q_dim], before o_proj. Adds the attention
  // branch and the MLP branch (in sequence, or in parallel off h: GPT-NeoX, Cohere)
  // and returns the layer's output. fuse_gate_up: gate and up in one matmul (the
  // training path; the same values). dropout: residual dropout on both branches.
  at::Tensor LayerTail(std::int64_t layer, const at::Tensor& h, const at::Tensor& normed, const at::Tensor& attn,
                       bool fuse_gate_up, bool dropout) const;

  ModelConfig config_;
  at::ScalarType dtype_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  at::Tensor embed_, final_norm_, final_norm_bias_, lm_head_;  // final_norm_bias_: GPT-NeoX's LayerNorm
  at::Tensor lm_head_bias_;  // Phi's, else undefined
  at::Tensor project_in_, project_out_;  // OPT-350m's (word_embed_proj_dim), else undefined
  at::Tensor positions_;  // GPT-2's learned position embeddings, else undefined
  at::Tensor embed_norm_, embed_norm_bias_;  // BLOOM's word_embeddings_layernorm, else undefined
  at::Tensor alibi_slopes_;  // BLOOM: [num_attention_heads] fp32 ALiBi slopes, else undefined
  bool dropout_ = false;
  bool record_router_ = false, record_without_grad_ = false;
  // The running sums of the recorded routing (see set_record_router): Σ w · one_hot
  // [k, E] (no grad), Σ w · probs [E], Σ w over (layer, token) pairs; and the current
  // forward's token weights (undefined outside a recorded forward).
  mutable at::Tensor router_choices_, router_probs_, router_weights_;
  mutable double router_weight_sum_ = 0.0, router_forward_weight_ = 0.0;
  std::vector<Layer> layers_;
  LayerRunner* runner_ = nullptr;
  const LinearAdapter* adapter_ = nullptr;
  at::Tensor inv_freq_;        // [head_dim / 2], fp32 (fp64 for an fp64 model)
  at::Tensor local_inv_freq_;  // the same from local_rope_theta (Gemma 3), else undefined
  at::Tensor long_inv_freq_;   // longrope: the long factors' table (inv_freq_ holds the short one)
  at::Tensor rope_exponent_;   // dynamic NTK: 2i / d, i < d/2 (the base is chosen per forward)
  double rope_attention_scaling_ = 1.0;  // longrope's and yarn's attention_factor on cos and sin
};

// The model's tensor names and shapes for a config (lm_head only if untied): HF's
// names, one tensor per projection (see FuseProjections for Phi-3's checkpoints);
// GPT-2's learned positions as model.embed_positions.weight.
std::vector<std::pair<std::string, std::vector<std::int64_t>>> ExpectedTensors(const ModelConfig& config);

// Between the model's tensors and a checkpoint's where config.fused_projections
// (Phi-3) or the model is GPT-NeoX. Phi-3: the checkpoint stores model.layers.<i>.self_attn.qkv_proj.weight
// [q + 2 kv, hidden] (q, k, v rows in that order) and mlp.gate_up_proj.weight
// [2 intermediate, hidden] (gate rows, then up). FuseProjections concatenates each
// complete set (at the place of its first part; the others keep their order);
// SplitFusedProjections splits the fused tensors in place (InvalidArgument naming a
// fused tensor of the wrong shape). Both leave other families' tensors as they are.
// SplitFusedProjections also splits transformers 5's experts of an MoE layer,
// model.layers.<i>.mlp.experts.gate_up_proj [E, 2 I, H] (gate rows, then up) and
// experts.down_proj [E, H, I], into one tensor per expert (ExpertWeightNames), and
// moves Mixtral's router from mlp.gate to block_sparse_moe.gate: the hub's layout.
// GPT-NeoX: the checkpoint's names are gpt_neox.embed_in, gpt_neox.layers.<i>.{input_layernorm,
// post_attention_layernorm, attention.query_key_value, attention.dense, mlp.dense_h_to_4h,
// mlp.dense_4h_to_h}, gpt_neox.final_layer_norm and embed_out; query_key_value
// [3 hidden, hidden] (and its bias) holds q, k, v interleaved by head: rows
// [3 D h, 3 D h + D) are head h's q, the next D its k, the next D its v (D = head_dim),
// as GPTNeoXAttention views its output [.., heads, 3 D]. Old checkpoints' buffers
// (attention.bias, attention.masked_bias) are dropped at load.
// GPT-2: transformer.wte, transformer.wpe, transformer.h.<i>.{ln_1, attn.c_attn,
// attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}, transformer.ln_f (checkpoints without the
// transformer. prefix load too); every projection is a Conv1D weight [in, out], the
// transpose of the model's, and c_attn's columns are q, then k, then v. Its old
// buffers (attn.bias, attn.masked_bias) are dropped at load.
// OPT: model.decoder.{embed_tokens, embed_positions, final_layer_norm},
// model.decoder.layers.<i>.{self_attn_layer_norm, self_attn.{q,k,v,out}_proj,
// final_layer_norm, fc1, fc2} (OPTModel's files without the model. prefix load too).
std::vector<std::pair<std::string, at::Tensor>> FuseProjections(const ModelConfig& config,
                                                                 std::vector<std::pair<std::string, at::Tensor>> tensors);
absl::Status SplitFusedProjections(const ModelConfig& config, std::map<std::string, at::Tensor>* tensors);
// The name a checkpoint of `config` gives model tensor `name` (the fused tensor's,
// for a projection that the checkpoint fuses): GPT-NeoX's and GPT-2's own names, the
// model's for the other families (Phi-3's fused names are not given here).
std::string CheckpointNameOf(const ModelConfig& config, const std::string& name);

// The weights of expert `expert` of MoE layer `layer`, by HF name: Mixtral's
// block_sparse_moe.experts.<e>.w1/w3/w2, Qwen-MoE's mlp.experts.<e>.gate_proj/up_proj/down_proj.
struct ExpertNames {
  std::string gate, up, down;
};
ExpertNames ExpertWeightNames(const ModelConfig& config, std::int64_t layer, std::int64_t expert);

// The decoder layer a tensor name belongs to: i for "…model.layers.<i>.…" (HF's names,
// and PEFT's "base_model.model.model.layers.<i>.…"; GPT-NeoX's gpt_neox.layers.<i>,
// GPT-2's transformer.h.<i>, OPT's model.decoder.layers.<i>), else -1.
std::int64_t DecoderLayerOf(const std::string& name);

}  // namespace posttrain
