// The training step's shapes that bench_roberta_training (figures 6 to 8)
// and distributed_step time, and their matrix-product FLOPs.
#pragma once

#include <cstdint>

#include "model/roberta_config.hpp"

namespace finetune_bench {

using roberta_regression::RobertaConfig;

struct Shape {
  RobertaConfig config;
  int64_t batch, tokens;
};

// The demo's embedded model (assets/demo-model/config.json) and its batch.
inline Shape demo_shape() {
  RobertaConfig c;
  c.vocab_size = 8192;
  c.hidden_size = 128;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.intermediate_size = 512;
  c.max_position_embeddings = 130;
  return {c, 16, 96};
}

// roberta-base (its config.json) at batch 8 x 256.
inline Shape base_shape() { return {RobertaConfig{}, 8, 256}; }

// The floating-point operations of one training step at this shape: the
// matrix products only (2 per multiply-add), forward and backward (twice the
// forward: the gradients of inputs and of weights). Per layer and token: Q,
// K, V and the attention output (4 h²), the feed-forward (2 h i); per layer
// and sequence: the scores and the weighted sum (2 L² h). The pooler and the
// regressor (h² and h per sequence) are counted too; the embeddings are a
// lookup. Element-wise work (GELU, LayerNorm, softmax, dropout, AdamW) is not
// counted: it is what keeps a step below the matmul ceiling.
inline double training_flops(const Shape& s) {
  const double h = s.config.hidden_size, i = s.config.intermediate_size;
  const double b = s.batch, l = s.tokens, layers = s.config.num_hidden_layers;
  const double per_layer = 2.0 * b * l * (4.0 * h * h + 2.0 * h * i) + 2.0 * b * 2.0 * l * l * h;
  const double head = 2.0 * b * (h * h + h);
  return 3.0 * (layers * per_layer + head);
}

}  // namespace finetune_bench
