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

}  // namespace posttrain::bench
