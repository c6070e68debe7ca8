// A Hugging Face-compatible RoBERTa and BERT in LibTorch: RobertaModel
// (embeddings, post-LN encoder, pooler), the article's RobertaRegressor and
// RobertaForMaskedLM, with HF's parameter names, so that `model.safetensors`
// and `config.json` from the hub load unchanged. RobertaModel implements both
// encoder families (config.model_type "roberta" or "bert"): they share every
// layer and differ only in the embeddings' position ids. Example code, not
// library API.
#pragma once

#include <torch/torch.h>

#include <finetune/compat.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/dense.hpp"
#include "model/roberta_config.hpp"
#include "model/safetensors.hpp"

namespace roberta_regression {

struct RobertaOutput {
  torch::Tensor last_hidden_state;  ///< [B, T, hidden]
  torch::Tensor pooler_output;      ///< [B, hidden]; undefined without a pooler
};

namespace detail {
/// `layer(x)` through dense_linear (model/dense.hpp): ATen's linear, which
/// Python's nn.Linear calls and which folds a contiguous [B, T, in] input
/// into one addmm with the bias, or oneDNN's where MKL holds this CPU back.
/// LibTorch's LinearImpl::forward runs matmul and then adds the bias as a
/// separate pass (about 3% of the demo model's training step).
inline torch::Tensor dense(const torch::nn::Linear& layer, const torch::Tensor& x) {
  return dense_linear(x, layer->weight, layer->bias);
}

/// The keep mask of dropout with probability p on the CPU, scaled by
/// 1 / (1 - p) as at::dropout scales, in x's dtype. Each element is kept when
/// a 16-bit random integer is at least round(p * 65536) above the lowest one,
/// so the keep probability is a multiple of 1 / 65536, within 7.7e-6 of 1 - p
/// (a float from rand_like has 24 random bits, a bfloat16 one 8). One 64-bit
/// draw gives four elements: the CPU generator is a serial loop, and
/// rand_like's one draw per element was half the mask's cost (27 ms against
/// 14 ms for roberta-base's [8, 12, 256, 256] attention mask). The compare is
/// done in float, where every 16-bit integer is exact.
inline torch::Tensor dropout_mask(const torch::Tensor& x, double p) {
  const int64_t n = x.numel();
  const double dropped = std::round(p * 65536.0);
  auto bits = torch::empty({(n + 3) / 4}, x.options().dtype(torch::kLong))
                  .random_(std::numeric_limits<int64_t>::min(), c10::optional<int64_t>());
  return bits.view(torch::kShort)
      .narrow(0, 0, n)
      .to(torch::kFloat)
      .ge_(-32768.0 + dropped)
      .mul_(1.0 / (1.0 - p))
      .to(x.scalar_type())
      .view(x.sizes());
}

/// at::dropout in training mode: zero each element with probability p, scale
/// the rest by 1 / (1 - p). On the CPU the mask is dropout_mask's: at::dropout
/// draws it with bernoulli_, a serial loop at about 5 ns an element, and its
/// masks were a quarter of the demo model's training step. Elsewhere
/// at::dropout is one fused kernel and is used as it is.
inline torch::Tensor dropout(const torch::Tensor& x, double p, bool training) {
  if (!training || p == 0.0) return x;
  if (!x.is_cpu() || p >= 1.0) return torch::dropout(x, p, training);
  return x * dropout_mask(x, p);
}

/// softmax(q k^T / sqrt(d), masked) -> dropout -> @ v: HF's eager attention
/// (its additive mask of the dtype's minimum as a masked_fill). `keep` is
/// bool, broadcast to [B, H, T, T], true where the key is a real token.
inline torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const torch::Tensor& keep,
                               double dropout_p) {
  // Scaling q ([B, H, T, D]) before the product costs less than scaling the
  // scores; masking in place saves a copy of the scores (matmul's backward
  // does not need its output).
  auto scores = torch::matmul(q / std::sqrt(static_cast<double>(q.size(-1))), k.transpose(-1, -2));
  // The lowest value of the scores' dtype (HF's torch.finfo(dtype).min):
  // float16/bfloat16 scores under autocast (--precision) cannot hold float's.
  const double lowest = scores.scalar_type() == torch::kFloat16
                            ? double(std::numeric_limits<c10::Half>::lowest())
                        : scores.scalar_type() == torch::kBFloat16
                            ? double(std::numeric_limits<c10::BFloat16>::lowest())
                            : double(std::numeric_limits<float>::lowest());
  scores.masked_fill_(keep.logical_not(), lowest);
  return torch::matmul(detail::dropout(torch::softmax(scores, -1), dropout_p, dropout_p > 0.0), v);
}
}  // namespace detail

/// word + position + token-type embeddings -> LayerNorm -> dropout.
/// Positions: RoBERTa counts real tokens from padding_idx + 1 (padding keeps
/// padding_idx); BERT uses 0..T-1 in every row (HF's position_ids buffer), and
/// its position table has no padding row.
class RobertaEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit RobertaEmbeddingsImpl(const RobertaConfig& c);
  /// `token_type_ids` int64 [B, T], or undefined: type 0 for every token.
  torch::Tensor forward(const torch::Tensor& input_ids,
                        const torch::Tensor& token_type_ids = torch::Tensor());

  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr},
      token_type_embeddings{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};  // HF's name
  int64_t padding_idx;
  bool bert_positions;  ///< BERT's 0..T-1 rather than RoBERTa's count
  double dropout_p;
};
TORCH_MODULE(RobertaEmbeddings);

/// HF's `attention.self`: query/key/value projections and scaled dot-product attention.
class RobertaSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit RobertaSelfAttentionImpl(const RobertaConfig& c);
  /// `keep` is bool [B, 1, 1, T], true where the key is a real token.
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& keep);

  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr};
  int64_t heads, head_dim;
  double dropout_p;
};
TORCH_MODULE(RobertaSelfAttention);

/// dense -> dropout -> LayerNorm(x + residual): HF's RobertaSelfOutput and RobertaOutput.
class RobertaResidualOutputImpl : public torch::nn::Module {
 public:
  RobertaResidualOutputImpl(int64_t in, const RobertaConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& residual);

  torch::nn::Linear dense{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};
  double dropout_p;
};
TORCH_MODULE(RobertaResidualOutput);

class RobertaAttentionImpl : public torch::nn::Module {
 public:
  explicit RobertaAttentionImpl(const RobertaConfig& c);
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& keep);

  RobertaSelfAttention self{nullptr};  // "self"
  RobertaResidualOutput output{nullptr};
};
TORCH_MODULE(RobertaAttention);

class RobertaIntermediateImpl : public torch::nn::Module {
 public:
  explicit RobertaIntermediateImpl(const RobertaConfig& c);
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::gelu(detail::dense(dense, x));  // exact erf
  }

  torch::nn::Linear dense{nullptr};
};
TORCH_MODULE(RobertaIntermediate);

/// One post-LN transformer block (HF's RobertaLayer).
class RobertaLayerImpl : public torch::nn::Module {
 public:
  explicit RobertaLayerImpl(const RobertaConfig& c);
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& keep);

  RobertaAttention attention{nullptr};
  RobertaIntermediate intermediate{nullptr};
  RobertaResidualOutput output{nullptr};
};
TORCH_MODULE(RobertaLayer);

class RobertaEncoderImpl : public torch::nn::Module {
 public:
  explicit RobertaEncoderImpl(const RobertaConfig& c);
  torch::nn::ModuleList layer{nullptr};  // "layer": encoder.layer.{i}
};
TORCH_MODULE(RobertaEncoder);

class RobertaPoolerImpl : public torch::nn::Module {
 public:
  explicit RobertaPoolerImpl(const RobertaConfig& c);
  /// First token -> dense -> tanh.
  torch::Tensor forward(const torch::Tensor& hidden);
  torch::nn::Linear dense{nullptr};
};
TORCH_MODULE(RobertaPooler);

/// HF's RobertaModel, or HF's BertModel when config.model_type is "bert".
/// Parameter names equal their state-dict keys.
class RobertaModelImpl : public torch::nn::Module {
 public:
  explicit RobertaModelImpl(const RobertaConfig& config, bool add_pooling_layer = true);
  /// input_ids int64 [B, T]; attention_mask [B, T] of 0/1 (any integer, bool or
  /// float dtype), on the parameters' device; token_type_ids int64 [B, T], or
  /// undefined for type 0 everywhere (single sentences). Throws
  /// std::invalid_argument on wrong ranks or shapes, or T longer than the
  /// position table allows (RoBERTa: T + pad_token_id + 1 <=
  /// max_position_embeddings; BERT: T <= max_position_embeddings).
  RobertaOutput forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                        const torch::Tensor& token_type_ids = torch::Tensor());
  const RobertaConfig& config() const { return config_; }
  /// encoder.layer, for finetune::ReinitTopLayers.
  torch::nn::ModuleList layers() const { return encoder->layer; }
  /// pooler.dense (null holder without a pooler).
  torch::nn::Linear pooler_dense() const {
    return pooler ? pooler->dense : torch::nn::Linear{nullptr};
  }

  RobertaEmbeddings embeddings{nullptr};
  RobertaEncoder encoder{nullptr};
  RobertaPooler pooler{nullptr};

 private:
  RobertaConfig config_;
};
TORCH_MODULE(RobertaModel);

/// The article's model: RobertaModel, then Linear(hidden, 1) on the pooler output.
class RobertaRegressorImpl : public torch::nn::Module {
 public:
  explicit RobertaRegressorImpl(const RobertaConfig& config);
  /// Predictions [B] (float).
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask);

  RobertaModel roberta{nullptr};
  torch::nn::Linear regressor{nullptr};
};
TORCH_MODULE(RobertaRegressor);

/// HF's RobertaLMHead: dense -> gelu -> layer_norm -> decoder (tied to the
/// word embeddings) + bias.
class RobertaLMHeadImpl : public torch::nn::Module {
 public:
  explicit RobertaLMHeadImpl(const RobertaConfig& c);
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& decoder_weight);

  torch::nn::Linear dense{nullptr};
  torch::nn::LayerNorm layer_norm{nullptr};
  torch::Tensor bias;
};
TORCH_MODULE(RobertaLMHead);

/// HF's RobertaForMaskedLM (no pooler, as HF), for pretraining.
class RobertaForMaskedLMImpl : public torch::nn::Module {
 public:
  explicit RobertaForMaskedLMImpl(const RobertaConfig& config);
  /// Logits [B, T, vocab].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask);
  /// Logits of selected hidden states [N, hidden] -> [N, vocab] (pretraining
  /// computes them only at the masked positions).
  torch::Tensor logits(const torch::Tensor& hidden);

  RobertaModel roberta{nullptr};
  RobertaLMHead lm_head{nullptr};
};
TORCH_MODULE(RobertaForMaskedLM);

/// HF's _init_weights: Linear N(0, range) with bias 0; Embedding N(0, range)
/// with the padding row 0; LayerNorm weight 1, bias 0. Uses torch's global
/// generator (seed with torch::manual_seed).
void init_roberta_weights(torch::nn::Module& module, double initializer_range);

/// What load_safetensors_weights did, as HF reports it. `buffers`: tensors
/// of the file that are HF's non-trainable index buffers
/// (embeddings.position_ids, embeddings.token_type_ids, which older BERT and
/// RoBERTa checkpoints carry), ignored and not counted as unexpected: the
/// model computes the same indices itself.
struct LoadReport {
  std::vector<std::string> loaded, missing, unexpected, buffers;
  /// One line: counts, and the missing / unexpected keys (abbreviated).
  std::string summary() const;
};

/// Loads `path` into `module` by name, HF's way: keys with or without the
/// "roberta." or "bert." prefix (whichever matches the module best; a
/// module's own "roberta." prefix, as in RobertaRegressor, maps to either),
/// HF's index buffers listed in LoadReport::buffers, lm_head's tied
/// decoder aliases skipped, F32/F16/BF16 cast to each parameter's dtype and
/// copied to its device. Keys the module lacks (e.g. lm_head.*) are reported
/// as unexpected; parameters the file lacks keep their values and are
/// reported as missing. A shape mismatch throws std::invalid_argument naming
/// the file, the key and both shapes.
LoadReport load_safetensors_weights(torch::nn::Module& module, const std::string& path);

/// dir/config.json.
RobertaConfig load_config_dir(const std::string& dir);

/// Writes dir/config.json and dir/model.safetensors (every parameter under its
/// name, atomically each), loadable by `transformers.AutoModel.from_pretrained(dir)`.
void save_pretrained(torch::nn::Module& module, const RobertaConfig& config,
                     const std::string& dir);

/// Writes every parameter of `module` under its name, as fp32, to the
/// safetensors file `path` (HF's layout, metadata format pt; atomic).
void save_weights(const torch::nn::Module& module, const std::string& path);

// --- implementation -----------------------------------------------------------

namespace detail {
inline torch::nn::LayerNorm layer_norm(const RobertaConfig& c) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps));
}
}  // namespace detail

inline RobertaEmbeddingsImpl::RobertaEmbeddingsImpl(const RobertaConfig& c)
    : padding_idx(c.pad_token_id), bert_positions(c.is_bert()), dropout_p(c.hidden_dropout_prob) {
  // Padding rows get no gradient, as nn.Embedding(padding_idx=...) in HF.
  word_embeddings = register_module(
      "word_embeddings",
      torch::nn::Embedding(
          torch::nn::EmbeddingOptions(c.vocab_size, c.hidden_size).padding_idx(c.pad_token_id)));
  // RoBERTa's position table has a padding row (padding's position); BERT's has none.
  auto positions = torch::nn::EmbeddingOptions(c.max_position_embeddings, c.hidden_size);
  if (!c.is_bert()) positions.padding_idx(c.pad_token_id);
  position_embeddings = register_module("position_embeddings", torch::nn::Embedding(positions));
  token_type_embeddings = register_module("token_type_embeddings",
                                          torch::nn::Embedding(c.type_vocab_size, c.hidden_size));
  LayerNorm = register_module("LayerNorm", detail::layer_norm(c));
}

inline torch::Tensor RobertaEmbeddingsImpl::forward(const torch::Tensor& input_ids,
                                                    const torch::Tensor& token_type_ids) {
  torch::Tensor position_part;
  if (bert_positions) {
    // BERT: 0..T-1 for every row, padding or not (HF's position_ids buffer).
    position_part = position_embeddings->weight.narrow(0, 0, input_ids.size(1));
  } else {
    // RoBERTa's positions: count real tokens (id != pad) from padding_idx + 1;
    // padding keeps padding_idx (HF create_position_ids_from_input_ids).
    const auto real = input_ids.ne(padding_idx).to(torch::kInt64);
    position_part = position_embeddings(torch::cumsum(real, 1) * real + padding_idx);
  }
  const auto type_part = token_type_ids.defined() ? token_type_embeddings(token_type_ids)
                                                  : token_type_embeddings->weight[0];
  auto x = word_embeddings(input_ids) + position_part + type_part;
  return detail::dropout(LayerNorm(x), dropout_p, is_training());
}

inline RobertaSelfAttentionImpl::RobertaSelfAttentionImpl(const RobertaConfig& c)
    : heads(c.num_attention_heads),
      head_dim(c.hidden_size / c.num_attention_heads),
      dropout_p(c.attention_probs_dropout_prob) {
  query = register_module("query", torch::nn::Linear(c.hidden_size, c.hidden_size));
  key = register_module("key", torch::nn::Linear(c.hidden_size, c.hidden_size));
  value = register_module("value", torch::nn::Linear(c.hidden_size, c.hidden_size));
}

inline torch::Tensor RobertaSelfAttentionImpl::forward(const torch::Tensor& hidden,
                                                       const torch::Tensor& keep) {
  const int64_t b = hidden.size(0), t = hidden.size(1);
  auto split = [&](const torch::Tensor& x) {
    return x.view({b, t, heads, head_dim}).transpose(1, 2);  // [B, H, T, D]
  };
  const auto q = split(detail::dense(query, hidden)), k = split(detail::dense(key, hidden)),
             v = split(detail::dense(value, hidden));
  const double p = is_training() ? dropout_p : 0.0;
  // Fused kernels where they exist: flash attention on the CPU without dropout,
  // flash / memory-efficient on CUDA; a boolean mask works under any autocast
  // dtype. With dropout on the CPU, SDPA would take its math path with
  // bernoulli_ masks; detail::attention is that path with detail::dropout.
  const auto context =
      finetune::compat::kHasScaledDotProductAttention && (p == 0.0 || !hidden.is_cpu())
          ? finetune::compat::scaled_dot_product_attention(q, k, v, keep, p)
          : detail::attention(q, k, v, keep, p);
  return context.transpose(1, 2).reshape({b, t, heads * head_dim});
}

inline RobertaResidualOutputImpl::RobertaResidualOutputImpl(int64_t in, const RobertaConfig& c)
    : dropout_p(c.hidden_dropout_prob) {
  dense = register_module("dense", torch::nn::Linear(in, c.hidden_size));
  LayerNorm = register_module("LayerNorm", detail::layer_norm(c));
}

inline torch::Tensor RobertaResidualOutputImpl::forward(const torch::Tensor& x,
                                                        const torch::Tensor& residual) {
  return LayerNorm(detail::dropout(detail::dense(dense, x), dropout_p, is_training()) + residual);
}

inline RobertaAttentionImpl::RobertaAttentionImpl(const RobertaConfig& c) {
  self = register_module("self", RobertaSelfAttention(c));
  output = register_module("output", RobertaResidualOutput(c.hidden_size, c));
}

inline torch::Tensor RobertaAttentionImpl::forward(const torch::Tensor& hidden,
                                                   const torch::Tensor& keep) {
  return output(self(hidden, keep), hidden);
}

inline RobertaIntermediateImpl::RobertaIntermediateImpl(const RobertaConfig& c) {
  dense = register_module("dense", torch::nn::Linear(c.hidden_size, c.intermediate_size));
}

inline RobertaLayerImpl::RobertaLayerImpl(const RobertaConfig& c) {
  attention = register_module("attention", RobertaAttention(c));
  intermediate = register_module("intermediate", RobertaIntermediate(c));
  output = register_module("output", RobertaResidualOutput(c.intermediate_size, c));
}

inline torch::Tensor RobertaLayerImpl::forward(const torch::Tensor& hidden,
                                               const torch::Tensor& keep) {
  const auto attended = attention(hidden, keep);
  return output(intermediate(attended), attended);
}

inline RobertaEncoderImpl::RobertaEncoderImpl(const RobertaConfig& c) {
  layer = register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layer->push_back(RobertaLayer(c));
}

inline RobertaPoolerImpl::RobertaPoolerImpl(const RobertaConfig& c) {
  dense = register_module("dense", torch::nn::Linear(c.hidden_size, c.hidden_size));
}

inline torch::Tensor RobertaPoolerImpl::forward(const torch::Tensor& hidden) {
  return torch::tanh(detail::dense(dense, hidden.select(1, 0)));
}

inline RobertaModelImpl::RobertaModelImpl(const RobertaConfig& config, bool add_pooling_layer)
    : config_(config) {
  embeddings = register_module("embeddings", RobertaEmbeddings(config));
  encoder = register_module("encoder", RobertaEncoder(config));
  if (add_pooling_layer) pooler = register_module("pooler", RobertaPooler(config));
  init_roberta_weights(*this, config.initializer_range);
}

inline RobertaOutput RobertaModelImpl::forward(const torch::Tensor& input_ids,
                                               const torch::Tensor& attention_mask,
                                               const torch::Tensor& token_type_ids) {
  if (input_ids.dim() != 2 || input_ids.scalar_type() != torch::kInt64)
    throw std::invalid_argument("RobertaModel: input_ids must be int64 [batch, tokens], got " +
                                std::string(c10::toString(input_ids.scalar_type())) + " of rank " +
                                std::to_string(input_ids.dim()));
  if (attention_mask.sizes() != input_ids.sizes())
    throw std::invalid_argument("RobertaModel: attention_mask must have input_ids' shape");
  if (token_type_ids.defined() && (token_type_ids.sizes() != input_ids.sizes() ||
                                   token_type_ids.scalar_type() != torch::kInt64))
    throw std::invalid_argument("RobertaModel: token_type_ids must be int64 of input_ids' shape");
  if (config_.is_bert()) {
    // BERT's positions run 0..T-1.
    if (input_ids.size(1) > config_.max_position_embeddings)
      throw std::invalid_argument("RobertaModel (bert): " + std::to_string(input_ids.size(1)) +
                                  " tokens exceed max_position_embeddings " +
                                  std::to_string(config_.max_position_embeddings));
  } else if (input_ids.size(1) + config_.pad_token_id + 1 > config_.max_position_embeddings) {
    // RoBERTa's positions run up to T + padding_idx.
    throw std::invalid_argument("RobertaModel: " + std::to_string(input_ids.size(1)) +
                                " tokens exceed max_position_embeddings " +
                                std::to_string(config_.max_position_embeddings) +
                                " - padding_idx - 1");
  }
  const auto keep = attention_mask.ne(0).view({input_ids.size(0), 1, 1, input_ids.size(1)});
  auto hidden = embeddings(input_ids, token_type_ids);
  for (const auto& block : *encoder->layer)
    hidden = block->as<RobertaLayerImpl>()->forward(hidden, keep);
  return {hidden, pooler ? pooler(hidden) : torch::Tensor()};
}

inline RobertaRegressorImpl::RobertaRegressorImpl(const RobertaConfig& config) {
  roberta = register_module("roberta", RobertaModel(config));
  // PyTorch's default Linear initialization, as the notebook's nn.Linear(768, 1).
  regressor = register_module("regressor", torch::nn::Linear(config.hidden_size, 1));
}

inline torch::Tensor RobertaRegressorImpl::forward(const torch::Tensor& input_ids,
                                                   const torch::Tensor& attention_mask) {
  return detail::dense(regressor, roberta(input_ids, attention_mask).pooler_output).squeeze(-1);
}

inline RobertaLMHeadImpl::RobertaLMHeadImpl(const RobertaConfig& c) {
  dense = register_module("dense", torch::nn::Linear(c.hidden_size, c.hidden_size));
  layer_norm = register_module("layer_norm", detail::layer_norm(c));
  bias = register_parameter("bias", torch::zeros({c.vocab_size}));
}

inline torch::Tensor RobertaLMHeadImpl::forward(const torch::Tensor& hidden,
                                                const torch::Tensor& decoder_weight) {
  return dense_linear(layer_norm(torch::gelu(detail::dense(dense, hidden))), decoder_weight, bias);
}

inline RobertaForMaskedLMImpl::RobertaForMaskedLMImpl(const RobertaConfig& config) {
  roberta = register_module("roberta", RobertaModel(config, /*add_pooling_layer=*/false));
  lm_head = register_module("lm_head", RobertaLMHead(config));
  init_roberta_weights(*lm_head, config.initializer_range);
}

inline torch::Tensor RobertaForMaskedLMImpl::forward(const torch::Tensor& input_ids,
                                                     const torch::Tensor& attention_mask) {
  return logits(roberta(input_ids, attention_mask).last_hidden_state);
}

inline torch::Tensor RobertaForMaskedLMImpl::logits(const torch::Tensor& hidden) {
  return lm_head(hidden, roberta->embeddings->word_embeddings->weight);
}

inline void init_roberta_weights(torch::nn::Module& module, double initializer_range) {
  torch::NoGradGuard no_grad;
  // `module` itself may still be under construction (not yet owned by a
  // shared_ptr), so it is visited by reference, then its descendants.
  std::vector<torch::nn::Module*> all{&module};
  for (const auto& m : module.modules(/*include_self=*/false)) all.push_back(m.get());
  for (torch::nn::Module* m : all) {
    if (auto* linear = m->as<torch::nn::LinearImpl>()) {
      linear->weight.normal_(0.0, initializer_range);
      if (linear->bias.defined()) linear->bias.zero_();
    } else if (auto* embedding = m->as<torch::nn::EmbeddingImpl>()) {
      embedding->weight.normal_(0.0, initializer_range);
      if (const auto& pad = embedding->options.padding_idx()) embedding->weight[*pad].zero_();
    } else if (auto* norm = m->as<torch::nn::LayerNormImpl>()) {
      norm->weight.fill_(1.0);
      norm->bias.zero_();
    }
  }
}

inline std::string LoadReport::summary() const {
  auto list = [](const std::vector<std::string>& keys) {
    std::string s;
    for (size_t i = 0; i < keys.size() && i < 6; ++i) s += (i ? ", " : "") + keys[i];
    if (keys.size() > 6) s += ", ... (" + std::to_string(keys.size() - 6) + " more)";
    return s;
  };
  std::ostringstream out;
  out << loaded.size() << " tensors loaded";
  if (!missing.empty()) out << "; missing (initialized): " << list(missing);
  if (!unexpected.empty()) out << "; unexpected (ignored): " << list(unexpected);
  if (!buffers.empty()) out << "; index buffers (recomputed, ignored): " << list(buffers);
  return out.str();
}

namespace detail {
/// HF's non-persistent index buffers, which older checkpoints still carry
/// (with or without a "roberta." / "bert." prefix).
inline bool is_index_buffer(const std::string& name) {
  for (const char* suffix : {"embeddings.position_ids", "embeddings.token_type_ids"}) {
    const std::string s = suffix;
    if (name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0 &&
        (name.size() == s.size() || name[name.size() - s.size() - 1] == '.'))
      return true;
  }
  return false;
}
}  // namespace detail

inline LoadReport load_safetensors_weights(torch::nn::Module& module, const std::string& path) {
  const SafetensorsFile file = read_safetensors(path);
  LoadReport report;
  std::map<std::string, torch::Tensor> by_name;
  for (const auto& [name, tensor] : file.tensors) {
    // lm_head.decoder is tied to the word embeddings (and its bias to lm_head.bias).
    if (name == "lm_head.decoder.weight" || name == "lm_head.decoder.bias") continue;
    if (detail::is_index_buffer(name)) {
      report.buffers.push_back(name);
      continue;
    }
    by_name.emplace(name, tensor);
  }
  const auto params = module.named_parameters(/*recurse=*/true);
  // HF's base_model_prefix handling: the file may carry "roberta." or "bert."
  // where the module does not, or the module "roberta." where the file has
  // none or "bert."; take the mapping matching most. Mode 0: the module's
  // names; modes 1-3: the module's name without its "roberta." prefix, after
  // "", "roberta." or "bert.".
  const std::string own_prefix = "roberta.";
  const char* const file_prefixes[] = {"", "", "roberta.", "bert."};
  auto file_key = [&](const std::string& module_key, int mode) -> std::string {
    if (mode == 0) return module_key;
    const std::string base =
        module_key.rfind(own_prefix, 0) == 0 ? module_key.substr(own_prefix.size()) : module_key;
    return file_prefixes[mode] + base;
  };
  int best_mode = 0;
  size_t best_matches = 0;
  for (int mode = 0; mode < 4; ++mode) {
    size_t matches = 0;
    for (const auto& p : params) matches += by_name.count(file_key(p.key(), mode));
    if (matches > best_matches) best_matches = matches, best_mode = mode;
  }
  std::set<std::string> used;
  torch::NoGradGuard no_grad;
  for (const auto& p : params) {
    const std::string key = file_key(p.key(), best_mode);
    const auto it = by_name.find(key);
    if (it == by_name.end()) {
      report.missing.push_back(p.key());
      continue;
    }
    const auto& source = it->second;
    if (source.sizes() != p.value().sizes()) {
      std::ostringstream msg;
      msg << path << ": tensor \"" << key << "\" has shape " << source.sizes()
          << " but the model's \"" << p.key() << "\" has " << p.value().sizes()
          << " (does config.json match the weights?)";
      throw std::invalid_argument(msg.str());
    }
    if (!source.is_floating_point())
      throw std::invalid_argument(path + ": tensor \"" + key + "\" is not floating point");
    p.value().copy_(source.to(p.value().scalar_type()));  // cast, then copy to its device
    report.loaded.push_back(p.key());
    used.insert(key);
  }
  for (const auto& [name, tensor] : file.tensors)
    if (by_name.count(name) && !used.count(name)) report.unexpected.push_back(name);
  return report;
}

inline RobertaConfig load_config_dir(const std::string& dir) {
  return RobertaConfig::from_json_file((std::filesystem::path(dir) / "config.json").string());
}

inline void save_pretrained(torch::nn::Module& module, const RobertaConfig& config,
                            const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  save_weights(module, (fs::path(dir) / "model.safetensors").string());
  config.save((fs::path(dir) / "config.json").string());
}

inline void save_weights(const torch::nn::Module& module, const std::string& path) {
  NamedTensors tensors;
  for (const auto& p : module.named_parameters(/*recurse=*/true))
    tensors.emplace_back(p.key(), p.value().detach().to(torch::kFloat32));
  write_safetensors(path, tensors, {{"format", "pt"}});
}

}  // namespace roberta_regression
