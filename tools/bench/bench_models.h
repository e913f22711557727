// Model shapes the benchmarks share.
#pragma once

#include "posttrain/model/model_config.h"

namespace posttrain::bench {

// llama2.c's stories15M: dim 288, 6 layers, 6 heads, hidden 768, vocab 32000.
inline ModelConfig Stories15MShape() {
  ModelConfig c;
  c.vocab_size = 32000;
  c.hidden_size = 288;
  c.intermediate_size = 768;
  c.num_hidden_layers = 6;
  c.num_attention_heads = 6;
  c.num_key_value_heads = 6;
  c.head_dim = 48;
  c.max_position_embeddings = 1024;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = true;
  return c;
}

// llama2.c's stories260K (the quickstart's model): dim 64, 5 layers, 8 heads over 4
// KV heads, hidden 172, vocab 512, tied.
inline ModelConfig Stories260KShape() {
  ModelConfig c;
  c.vocab_size = 512;
  c.hidden_size = 64;
  c.intermediate_size = 172;
  c.num_hidden_layers = 5;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.head_dim = 8;
  c.max_position_embeddings = 512;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = true;
  return c;
}

}  // namespace posttrain::bench
