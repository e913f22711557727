// llama2.c "legacy" checkpoints (Karpathy's run.c format) → a Hugging Face Llama.
//
// Format: 7 little-endian int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
// vocab_size — negative when the classifier is not tied to the embedding —
// seq_len), then fp32 weights: token embedding [V, dim]; per-layer stacks of
// attention RMSNorm, wq, wk, wv, wo, FFN RMSNorm, w1, w2, w3 (each [out, in], the
// layout of a torch Linear); final RMSNorm; RoPE tables (skipped); classifier if
// untied. llama2.c rotates interleaved pairs (2i, 2i+1) of q and k, Hugging Face
// rotates halves, so q/k rows are permuted as transformers' Llama conversion does:
//   W.view(heads, rows / heads / 2, 2, cols).transpose(1, 2).reshape(rows, cols).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "posttrain/model/causal_lm.h"

namespace posttrain {

// Reads the checkpoint as an fp32 HF-layout model (rms_norm_eps 1e-5, rope_theta
// 10000, bos 1, eos 2, as llama2.c). InvalidArgument for a bad header,
// DataLoss for a file shorter than the header implies.
absl::StatusOr<std::unique_ptr<CausalLM>> ReadLlama2cCheckpoint(const std::string& path);

}  // namespace posttrain
