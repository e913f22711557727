#include "posttrain/model/llama2c.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "posttrain/core/device.h"
#include "posttrain/core/status.h"
#include "posttrain/core/text_file.h"

namespace posttrain {
namespace {

at::Tensor PermuteRotary(const at::Tensor& w, std::int64_t heads) {
  const std::int64_t rows = w.size(0), cols = w.size(1);
  return w.view({heads, rows / heads / 2, 2, cols}).transpose(1, 2).reshape({rows, cols});
}

}  // namespace

absl::StatusOr<std::unique_ptr<CausalLM>> ReadLlama2cCheckpoint(const std::string& path) {
  POSTTRAIN_ASSIGN_OR_RETURN(std::string bytes, ReadTextFile(path));
  if (bytes.size() < 28) {
    return absl::DataLossError(absl::StrCat("llama2.c checkpoint '", path, "' is ", bytes.size(),
                                            " bytes, shorter than its 28-byte header"));
  }
  std::int32_t h[7];
  std::memcpy(h, bytes.data(), sizeof(h));
  const std::int64_t dim = h[0], hidden = h[1], layers = h[2], heads = h[3], kv_heads = h[4];
  const bool shared = h[5] > 0;
  const std::int64_t vocab = shared ? h[5] : -static_cast<std::int64_t>(h[5]);
  const std::int64_t seq_len = h[6];
  if (dim <= 0 || hidden <= 0 || layers <= 0 || heads <= 0 || kv_heads <= 0 || vocab <= 0 || seq_len <= 0 ||
      dim % heads != 0 || heads % kv_heads != 0 || (dim / heads) % 2 != 0 || dim > (1 << 16) ||
      hidden > (1 << 18) || layers > 1024 || vocab > (1 << 22) || seq_len > (1 << 22)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "llama2.c checkpoint '", path, "' has an implausible header: dim ", dim, ", hidden_dim ", hidden,
        ", n_layers ", layers, ", n_heads ", heads, ", n_kv_heads ", kv_heads, ", vocab_size ", h[5],
        ", seq_len ", seq_len));
  }
  const std::int64_t head_size = dim / heads, kv_dim = kv_heads * head_size;

  ModelConfig c;
  c.vocab_size = vocab;
  c.hidden_size = dim;
  c.intermediate_size = hidden;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = head_size;
  c.max_position_embeddings = seq_len;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = shared;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};

  std::int64_t floats = vocab * dim + layers * (2 * dim + dim * dim + 2 * kv_dim * dim + dim * dim +
                                                3 * dim * hidden) +
                        dim + seq_len * head_size;  // + freq_cis real/imag (head_size/2 each)
  if (!shared) floats += vocab * dim;
  const std::uint64_t needed = 28 + 4 * static_cast<std::uint64_t>(floats);
  if (bytes.size() < needed) {
    return absl::DataLossError(absl::StrCat("llama2.c checkpoint '", path, "' is ", bytes.size(),
                                            " bytes; its header implies ", needed, " (truncated?)"));
  }
  const float* data = reinterpret_cast<const float*>(bytes.data() + 28);
  std::int64_t offset = 0;
  auto take = [&](std::vector<std::int64_t> shape) {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    at::Tensor t = at::empty(shape, HostOptions(at::kFloat));  // file contents
    std::memcpy(t.data_ptr<float>(), data + offset, static_cast<size_t>(n) * sizeof(float));
    offset += n;
    return t;
  };
  std::map<std::string, at::Tensor> tensors;
  auto layer_name = [](std::int64_t i, const char* suffix) { return absl::StrCat("model.layers.", i, ".", suffix); };
  tensors["model.embed_tokens.weight"] = take({vocab, dim});
  at::Tensor att_norm = take({layers, dim});
  at::Tensor wq = take({layers, dim, dim});
  at::Tensor wk = take({layers, kv_dim, dim});
  at::Tensor wv = take({layers, kv_dim, dim});
  at::Tensor wo = take({layers, dim, dim});
  at::Tensor ffn_norm = take({layers, dim});
  at::Tensor w1 = take({layers, hidden, dim});
  at::Tensor w2 = take({layers, dim, hidden});
  at::Tensor w3 = take({layers, hidden, dim});
  tensors["model.norm.weight"] = take({dim});
  offset += seq_len * head_size;  // freq_cis_real, freq_cis_imag: recomputed from rope_theta
  if (!shared) tensors["lm_head.weight"] = take({vocab, dim});
  for (std::int64_t i = 0; i < layers; ++i) {
    tensors[layer_name(i, "input_layernorm.weight")] = att_norm[i].clone();
    tensors[layer_name(i, "self_attn.q_proj.weight")] = PermuteRotary(wq[i], heads);
    tensors[layer_name(i, "self_attn.k_proj.weight")] = PermuteRotary(wk[i], kv_heads);
    tensors[layer_name(i, "self_attn.v_proj.weight")] = wv[i].clone();
    tensors[layer_name(i, "self_attn.o_proj.weight")] = wo[i].clone();
    tensors[layer_name(i, "post_attention_layernorm.weight")] = ffn_norm[i].clone();
    tensors[layer_name(i, "mlp.gate_proj.weight")] = w1[i].clone();
    tensors[layer_name(i, "mlp.down_proj.weight")] = w2[i].clone();
    tensors[layer_name(i, "mlp.up_proj.weight")] = w3[i].clone();
  }
  return CausalLM::FromTensors(c, std::move(tensors), at::kFloat);
}

}  // namespace posttrain
