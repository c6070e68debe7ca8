// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// Layer-wise learning-rate decay (LLRD): parameter groups for the user's own
// optimizer in which the top transformer layer learns fastest and each layer
// below learns a little slower, because low layers hold general features
// that fine-tuning should disturb least (Howard & Ruder 2018, "Universal
// Language Model Fine-tuning", discriminative fine-tuning; Sun et al. 2019,
// "How to Fine-Tune BERT for Text Classification"; Zhang et al. 2021,
// "Revisiting Few-sample BERT Fine-tuning"). Also the "grouped" variant of
// the article "Advanced Techniques for Fine-tuning Transformers", where the
// stack is cut into sets sharing one rate. Biases and LayerNorm weights get
// no weight decay, as in the article's notebook.
//
//   auto llrd = finetune::LayerwiseLRGroups<torch::optim::AdamWOptions>(
//       model->named_parameters(), finetune::LayerwiseLROptions::article_layerwise());
//   torch::optim::AdamW optimizer(llrd.param_groups(), torch::optim::AdamWOptions(3.5e-6));
//   llrd.apply_to(optimizer);  // LibTorch 2.x merges group options with defaults
//   std::cout << llrd;   // group -> layers, parameters, lr, weight decay
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/ordered_dict.h>

#include "finetune/compat.hpp"

namespace finetune {

/// How learning rates vary with depth.
enum class LLRDMode {
  none,       ///< one rate for every parameter (layer rules are not consulted)
  layerwise,  ///< top layer `lr`, each layer below times `decay`; embeddings after the last decay
  grouped,  ///< the stack cut into sets, each at `lr * group_scales[k]`; head at `lr * head_scale`
};

/// The block a parameter belongs to, as decided by the layer rules or by a
/// user callback (LayerwiseLROptions::assign).
struct LayerId {
  enum class Kind { unmatched, embeddings, layer, head };
  Kind kind = Kind::unmatched;
  int64_t index = -1;  ///< layer index (Kind::layer only), 0 = closest to the embeddings

  static LayerId unmatched() { return {}; }
  static LayerId embeddings() { return {Kind::embeddings, -1}; }
  static LayerId layer(int64_t index) { return {Kind::layer, index}; }
  static LayerId head() { return {Kind::head, -1}; }
};

/// Options of LayerwiseLRGroups. Defaults: the article's layer-wise rates
/// (top layer 3.5e-6, decay 0.9, weight decay 0.01 except biases and
/// LayerNorm; the head at `lr` unless head_lr is set, article_layerwise()
/// sets 3.6e-6) and Hugging Face BERT/RoBERTa parameter names.
struct LayerwiseLROptions {
  /// `lr`: see the `lr` option.
  LayerwiseLROptions(double lr = 3.5e-6);  // NOLINT(google-explicit-constructor)

  /// The article's layer-wise LLRD: top layer 3.5e-6, decay 0.9, pooler and
  /// regressor 3.6e-6, weight decay 0.01.
  static LayerwiseLROptions article_layerwise();
  /// The article's grouped LLRD: embeddings + layers 0-3 at 1e-6, 4-7 at
  /// 1.75e-6, 8-11 at 3.5e-6, pooler and regressor at 3.6e-6 (as 1e-6 * 3.6),
  /// one optimizer group per parameter as in the notebook.
  static LayerwiseLROptions article_grouped();

  /// Layer-wise, grouped or none. Default layerwise.
  TORCH_ARG(LLRDMode, mode) = LLRDMode::layerwise;
  /// none: every parameter's rate; layerwise: the top layer's rate; grouped:
  /// the base rate (scale 1). Default 3.5e-6.
  TORCH_ARG(double, lr);
  /// Layer-wise: factor from one layer to the one below, applied as
  /// `rate *= decay` after each layer from the top (so embeddings get
  /// lr * decay^L, multiplied in that order). Default 0.9.
  TORCH_ARG(double, decay) = 0.9;
  /// Rate of the head (pooler, regressor, ...). Unset: `lr` in layerwise
  /// mode, `lr * head_scale` in grouped mode. Default unset.
  TORCH_ARG(std::optional<double>, head_lr) = std::nullopt;
  /// Grouped: rate multipliers of the sets, bottom set first; the bottom set
  /// also holds the embeddings. Default {1.0, 1.75, 3.5}.
  TORCH_ARG(std::vector<double>, group_scales) = std::vector<double>{1.0, 1.75, 3.5};
  /// Grouped: first layer of each set (starts at 0, increasing, one per
  /// scale). Empty: equal split t = floor(L / K) for K sets, the top set
  /// taking the remainder. Default empty.
  TORCH_ARG(std::vector<int64_t>, group_starts) = std::vector<int64_t>{};
  /// Grouped: head rate multiplier when head_lr is unset. Default 3.6.
  TORCH_ARG(double, head_scale) = 3.6;
  /// Weight decay of the parameters not matched by `no_decay`. Default 0.01.
  /// Needs an options type with `weight_decay(double)` unless it is 0.
  TORCH_ARG(double, weight_decay) = 0.01;
  /// Substrings of parameter names that get weight decay 0 (the notebook's
  /// `any(nd in name for nd in no_decay)`). Default {"bias",
  /// "LayerNorm.weight", "LayerNorm.bias"}.
  TORCH_ARG(std::vector<std::string>, no_decay) = std::vector<std::string>{
      "bias", "LayerNorm.weight", "LayerNorm.bias"};
  /// ECMAScript regexes (searched anywhere in the name) marking embedding
  /// parameters. Default {`(^|\.)embeddings\.`}.
  TORCH_ARG(std::vector<std::string>,
            embeddings_patterns) = std::vector<std::string>{R"((^|\.)embeddings\.)"};
  /// ECMAScript regex whose one capture group is the layer index. Default
  /// `(?:^|\.)encoder\.layer\.(\d+)\.` (BERT/RoBERTa; any model prefix).
  TORCH_ARG(std::string, layer_pattern) = R"((?:^|\.)encoder\.layer\.(\d+)\.)";
  /// Regexes marking head parameters. Default {`(^|\.)(pooler|regressor|classifier)\.`}.
  TORCH_ARG(std::vector<std::string>,
            head_patterns) = std::vector<std::string>{R"((^|\.)(pooler|regressor|classifier)\.)"};
  /// Callback replacing the three pattern rules: name -> LayerId (return
  /// LayerId::unmatched() to fall through to the catch-all or an error).
  /// Default none.
  TORCH_ARG(std::function<LayerId(const std::string&)>, assign) = nullptr;
  /// Number of layers L in the stack. 0: one more than the highest index
  /// found (frozen parameters included). Default 0.
  TORCH_ARG(int64_t, num_layers) = 0;
  /// Put parameters that no rule matches into a last group instead of
  /// throwing. Default false.
  TORCH_ARG(bool, catch_all) = false;
  /// Rate of the catch-all group; unset: `lr`. Default unset.
  TORCH_ARG(std::optional<double>, catch_all_lr) = std::nullopt;
  /// One optimizer group per parameter, in named_parameters() order (the
  /// notebook's grouped layout) instead of one per (block, decay) pair.
  /// Default false.
  TORCH_ARG(bool, per_parameter) = false;
  /// Put frozen parameters (requires_grad false) into their groups too, so
  /// that unfreezing them later (GradualUnfreezing) needs no new optimizer
  /// groups: optimizers skip a parameter until it has a gradient. Default
  /// false (frozen parameters are left out, as the notebook's optimizer
  /// never sees them).
  TORCH_ARG(bool, include_frozen) = false;

 public:
};

/// What one optimizer group holds (same order as param_groups()).
struct LRGroupInfo {
  std::string label;  ///< block: "head", "layer 11", "layers 8-11", "embeddings", ...
  std::vector<std::string> parameter_names;  ///< in named_parameters() order
  int64_t numel = 0;                         ///< elements over all its parameters
  double lr = 0.0;                           ///< its initial learning rate
  double weight_decay = 0.0;                 ///< its weight decay
};

/// Turns named parameters into LLRD optimizer groups for an optimizer whose
/// options type is `OptimizerOptions` (AdamWOptions, AdamOptions,
/// SGDOptions, ... any torch::optim::OptimizerOptions subclass).
///
/// Group order (not per_parameter): head, then the blocks from the top layer
/// down (layerwise: one per layer, then embeddings; grouped: one per set,
/// the bottom set holding the embeddings; none: one), then the catch-all;
/// inside a block the no-decay group comes before the decay group (split
/// only when weight_decay != 0). This is the notebook's layer-wise order.
/// Empty groups are left out. Frozen parameters (requires_grad false, unless
/// include_frozen is set) and
/// repeats of one tensor are skipped; every other parameter lands in exactly
/// one group. A parameter that no rule matches throws std::invalid_argument
/// naming it, unless catch_all is set.
template <typename OptimizerOptions = torch::optim::AdamWOptions>
class LayerwiseLRGroups {
  static_assert(
      std::is_base_of<torch::optim::OptimizerOptions, OptimizerOptions>::value,
      "LayerwiseLRGroups: OptimizerOptions must derive from torch::optim::OptimizerOptions");

 public:
  /// `named_parameters`: e.g. module->named_parameters(). `options`: the
  /// LLRD layout. `base`: options copied into every group before its lr and
  /// weight decay are set (betas, eps, momentum, ...).
  LayerwiseLRGroups(const torch::OrderedDict<std::string, torch::Tensor>& named_parameters,
                    LayerwiseLROptions options = LayerwiseLROptions(),
                    OptimizerOptions base = OptimizerOptions());
  /// Same, from `module.named_parameters(/*recurse=*/true)`.
  LayerwiseLRGroups(const torch::nn::Module& module,
                    LayerwiseLROptions options = LayerwiseLROptions(),
                    OptimizerOptions base = OptimizerOptions());

  /// Fresh groups for the optimizer's constructor, each with its own options
  /// (copies of `base` with the group's lr and weight decay).
  std::vector<torch::optim::OptimizerParamGroup> param_groups() const;
  /// Sets every group of `optimizer` (built from param_groups()) to exactly
  /// this object's options. Needed with LibTorch 2.x, whose Optimizer
  /// constructor replaces any group field equal to the options type's
  /// constructor default (e.g. AdamW weight_decay 0.01, lr 1e-3) by the
  /// optimizer's default; harmless with 1.x. Call it before building a
  /// schedule. Throws std::invalid_argument if the optimizer's groups hold
  /// other parameters.
  void apply_to(torch::optim::Optimizer& optimizer) const;
  /// Per-group metadata, same order as param_groups().
  const std::vector<LRGroupInfo>& groups() const noexcept { return info_; }
  /// Number of groups.
  size_t size() const noexcept { return info_.size(); }
  /// Number of layers L used.
  int64_t num_layers() const noexcept { return num_layers_; }
  const LayerwiseLROptions& options() const noexcept { return options_; }
  /// One line per group: index, block, parameters, elements, lr, weight decay.
  std::string describe() const;

 private:
  std::unique_ptr<OptimizerOptions> group_options(size_t g) const;

  LayerwiseLROptions options_;
  OptimizerOptions base_;
  int64_t num_layers_ = 0;
  std::vector<LRGroupInfo> info_;
  std::vector<std::vector<torch::Tensor>> params_;
};

template <typename OptimizerOptions>
std::ostream& operator<<(std::ostream& out, const LayerwiseLRGroups<OptimizerOptions>& groups) {
  return out << groups.describe();
}

// ---------------------------------------------------------------------------
// Definitions.
// ---------------------------------------------------------------------------

inline LayerwiseLROptions::LayerwiseLROptions(double lr) : lr_(lr) {}

inline LayerwiseLROptions LayerwiseLROptions::article_layerwise() {
  return LayerwiseLROptions(3.5e-6)
      .mode(LLRDMode::layerwise)
      .decay(0.9)
      .head_lr(3.6e-6)
      .weight_decay(0.01);
}

inline LayerwiseLROptions LayerwiseLROptions::article_grouped() {
  return LayerwiseLROptions(1e-6)
      .mode(LLRDMode::grouped)
      .group_scales({1.0, 1.75, 3.5})
      .head_scale(3.6)
      .weight_decay(0.01)
      .per_parameter(true);
}

namespace detail {

// Sets weight decay on options types that have it; others accept only 0.
template <typename O, typename = void>
struct HasWeightDecay : std::false_type {};
template <typename O>
struct HasWeightDecay<O, std::void_t<decltype(std::declval<O&>().weight_decay(0.0))>>
    : std::true_type {};

template <typename O>
void set_weight_decay(O& options, double weight_decay) {
  if constexpr (HasWeightDecay<O>::value) {
    options.weight_decay(weight_decay);
  } else if (weight_decay != 0.0) {
    throw std::invalid_argument(
        "LayerwiseLRGroups: weight_decay " + std::to_string(weight_decay) +
        " requested but this optimizer's options have no weight_decay; set weight_decay(0)");
  }
}

inline std::regex llrd_regex(const std::string& pattern, const char* option) {
  try {
    return std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw std::invalid_argument(std::string("LayerwiseLRGroups: ") + option + " '" + pattern +
                                "' is not a valid ECMAScript regex: " + e.what());
  }
}

inline void require_finite_nonnegative(double value, const char* name) {
  if (!std::isfinite(value) || value < 0.0) {
    std::ostringstream message;
    message << "LayerwiseLRGroups: " << name << " must be finite and >= 0, got " << value;
    throw std::invalid_argument(message.str());
  }
}

inline std::string layer_range_label(int64_t first, int64_t last) {
  return first == last ? "layer " + std::to_string(first)
                       : "layers " + std::to_string(first) + "-" + std::to_string(last);
}

}  // namespace detail

template <typename OptimizerOptions>
LayerwiseLRGroups<OptimizerOptions>::LayerwiseLRGroups(const torch::nn::Module& module,
                                                       LayerwiseLROptions options,
                                                       OptimizerOptions base)
    : LayerwiseLRGroups(module.named_parameters(/*recurse=*/true), std::move(options),
                        std::move(base)) {}

template <typename OptimizerOptions>
LayerwiseLRGroups<OptimizerOptions>::LayerwiseLRGroups(
    const torch::OrderedDict<std::string, torch::Tensor>& named_parameters,
    LayerwiseLROptions options, OptimizerOptions base)
    : options_(std::move(options)), base_(std::move(base)) {
  const LayerwiseLROptions& o = options_;
  const bool by_layer = o.mode() != LLRDMode::none;
  detail::require_finite_nonnegative(o.lr(), "lr");
  detail::require_finite_nonnegative(o.weight_decay(), "weight_decay");
  if (o.head_lr()) detail::require_finite_nonnegative(*o.head_lr(), "head_lr");
  if (o.catch_all_lr()) detail::require_finite_nonnegative(*o.catch_all_lr(), "catch_all_lr");
  if (!std::isfinite(o.decay()) || o.decay() <= 0.0) {
    std::ostringstream message;
    message << "LayerwiseLRGroups: decay must be finite and > 0, got " << o.decay();
    throw std::invalid_argument(message.str());
  }
  if (o.num_layers() < 0) {
    throw std::invalid_argument("LayerwiseLRGroups: num_layers must be >= 0 (0 = infer), got " +
                                std::to_string(o.num_layers()));
  }

  // 1. Which block each parameter belongs to.
  std::vector<std::regex> embeddings_rx, head_rx;
  std::regex layer_rx;
  if (by_layer && !o.assign()) {
    for (const auto& p : o.embeddings_patterns())
      embeddings_rx.push_back(detail::llrd_regex(p, "embeddings_patterns"));
    for (const auto& p : o.head_patterns())
      head_rx.push_back(detail::llrd_regex(p, "head_patterns"));
    layer_rx = detail::llrd_regex(o.layer_pattern(), "layer_pattern");
    if (layer_rx.mark_count() != 1) {
      throw std::invalid_argument("LayerwiseLRGroups: layer_pattern '" + o.layer_pattern() +
                                  "' must have exactly one capture group (the layer index), has " +
                                  std::to_string(layer_rx.mark_count()));
    }
  }
  auto classify = [&](const std::string& name) -> LayerId {
    if (!by_layer) return LayerId::head();  // unused in mode none
    if (o.assign()) return o.assign()(name);
    std::smatch m;
    if (std::regex_search(name, m, layer_rx)) {
      const std::string digits = m[1].str();
      try {
        size_t used = 0;
        const long long index = std::stoll(digits, &used);
        if (used == digits.size() && index >= 0) return LayerId::layer(index);
      } catch (const std::exception&) {
      }
      throw std::invalid_argument("LayerwiseLRGroups: layer_pattern captured '" + digits +
                                  "' in parameter '" + name + "', not a layer index");
    }
    for (const auto& rx : embeddings_rx)
      if (std::regex_search(name, rx)) return LayerId::embeddings();
    for (const auto& rx : head_rx)
      if (std::regex_search(name, rx)) return LayerId::head();
    return LayerId::unmatched();
  };

  struct Entry {
    std::string name;
    torch::Tensor tensor;
    LayerId id;
  };
  std::vector<Entry> entries;
  std::unordered_set<const void*> seen;
  int64_t highest = -1;
  for (const auto& item : named_parameters) {
    const torch::Tensor& t = item.value();
    if (!t.defined()) continue;
    const LayerId id = classify(item.key());
    if (id.kind == LayerId::Kind::layer) {
      if (id.index < 0) {
        throw std::invalid_argument("LayerwiseLRGroups: parameter '" + item.key() +
                                    "' assigned a negative layer index " +
                                    std::to_string(id.index));
      }
      highest = std::max(highest, id.index);
    }
    if (!t.requires_grad() && !o.include_frozen()) continue;
    if (!seen.insert(t.unsafeGetTensorImpl()).second) continue;  // tied weights: first name wins
    if (id.kind == LayerId::Kind::unmatched && !o.catch_all()) {
      throw std::invalid_argument(
          "LayerwiseLRGroups: parameter '" + item.key() +
          "' matches no layer rule (embeddings_patterns, layer_pattern, head_patterns or assign); "
          "add a rule or set catch_all(true)");
    }
    entries.push_back({item.key(), t, id});
  }
  if (entries.empty()) {
    throw std::invalid_argument(
        "LayerwiseLRGroups: no trainable parameters (all frozen or none given)");
  }
  num_layers_ = o.num_layers() > 0 ? o.num_layers() : highest + 1;
  if (highest >= num_layers_) {
    throw std::invalid_argument("LayerwiseLRGroups: found layer index " + std::to_string(highest) +
                                " but num_layers is " + std::to_string(num_layers_));
  }
  const int64_t L = num_layers_;

  // 2. Blocks ("buckets"), their rates and labels. Bucket b: 0 = head,
  // 1..n = from the top down, last = catch-all.
  std::vector<double> bucket_lr;
  std::vector<std::string> bucket_label;
  std::vector<int64_t> layer_bucket(static_cast<size_t>(L), 0);
  int64_t embeddings_bucket = 0;
  if (o.mode() == LLRDMode::none) {
    bucket_lr = {o.lr()};
    bucket_label = {"all"};
  } else if (o.mode() == LLRDMode::layerwise) {
    bucket_lr.push_back(o.head_lr() ? *o.head_lr() : o.lr());
    bucket_label.push_back("head");
    double lr = o.lr();
    for (int64_t layer = L - 1; layer >= 0; --layer) {  // the notebook's order of multiplication
      layer_bucket[static_cast<size_t>(layer)] = static_cast<int64_t>(bucket_lr.size());
      bucket_lr.push_back(lr);
      bucket_label.push_back("layer " + std::to_string(layer));
      lr *= o.decay();
    }
    embeddings_bucket = static_cast<int64_t>(bucket_lr.size());
    bucket_lr.push_back(lr);
    bucket_label.push_back("embeddings");
  } else {  // grouped
    const auto& scales = o.group_scales();
    const int64_t K = static_cast<int64_t>(scales.size());
    if (K == 0) throw std::invalid_argument("LayerwiseLRGroups: group_scales is empty");
    for (double s : scales) detail::require_finite_nonnegative(s, "group_scales[k]");
    detail::require_finite_nonnegative(o.head_scale(), "head_scale");
    std::vector<int64_t> starts = o.group_starts();
    if (starts.empty()) {
      if (L > 0 && L < K) {
        throw std::invalid_argument("LayerwiseLRGroups: grouped mode splits " + std::to_string(L) +
                                    " layers into " + std::to_string(K) +
                                    " sets; give fewer group_scales or explicit group_starts");
      }
      const int64_t t = K > 0 ? L / K : 0;
      for (int64_t k = 0; k < K; ++k) starts.push_back(k * t);
    } else {
      if (static_cast<int64_t>(starts.size()) != K) {
        throw std::invalid_argument("LayerwiseLRGroups: group_starts has " +
                                    std::to_string(starts.size()) +
                                    " entries but group_scales has " + std::to_string(K));
      }
      for (int64_t k = 0; k < K; ++k) {
        const int64_t s = starts[static_cast<size_t>(k)];
        if ((k == 0 && s != 0) || (k > 0 && s <= starts[static_cast<size_t>(k - 1)]) ||
            (L > 0 && s >= L)) {
          throw std::invalid_argument(
              "LayerwiseLRGroups: group_starts[" + std::to_string(k) + "] = " + std::to_string(s) +
              " (must start at 0, increase, stay below " + std::to_string(L) + " layers)");
        }
      }
    }
    bucket_lr.push_back(o.head_lr() ? *o.head_lr() : o.lr() * o.head_scale());
    bucket_label.push_back("head");
    for (int64_t k = K - 1; k >= 0; --k) {
      const int64_t first = starts[static_cast<size_t>(k)];
      const int64_t last = (k + 1 < K ? starts[static_cast<size_t>(k + 1)] : L) - 1;
      const int64_t b = static_cast<int64_t>(bucket_lr.size());
      for (int64_t layer = first; layer <= last && layer < L; ++layer)
        layer_bucket[static_cast<size_t>(layer)] = b;
      bucket_lr.push_back(o.lr() * scales[static_cast<size_t>(k)]);  // the notebook: init_lr * 1.75
      std::string label = L > 0 ? detail::layer_range_label(first, last) : std::string();
      if (k == 0) label = label.empty() ? "embeddings" : "embeddings, " + label;
      bucket_label.push_back(label);
    }
    embeddings_bucket = static_cast<int64_t>(bucket_lr.size()) - 1;
  }
  const int64_t catch_all_bucket = static_cast<int64_t>(bucket_lr.size());
  bucket_lr.push_back(o.catch_all_lr() ? *o.catch_all_lr() : o.lr());
  bucket_label.push_back("catch-all");

  auto bucket_of = [&](const LayerId& id) -> int64_t {
    if (o.mode() == LLRDMode::none) return 0;
    switch (id.kind) {
      case LayerId::Kind::head:
        return 0;
      case LayerId::Kind::embeddings:
        return embeddings_bucket;
      case LayerId::Kind::layer:
        return layer_bucket[static_cast<size_t>(id.index)];
      case LayerId::Kind::unmatched:
        break;
    }
    return catch_all_bucket;
  };
  auto decays = [&](const std::string& name) {
    for (const auto& nd : o.no_decay())
      if (!nd.empty() && name.find(nd) != std::string::npos) return false;
    return true;
  };

  // 3. Groups.
  auto add_group = [&](const std::string& label, double lr, double wd) {
    LRGroupInfo info;
    info.label = label;
    info.lr = lr;
    info.weight_decay = wd;
    info_.push_back(std::move(info));
    params_.emplace_back();
  };
  auto add_param = [&](const Entry& e) {
    info_.back().parameter_names.push_back(e.name);
    info_.back().numel += e.tensor.numel();
    params_.back().push_back(e.tensor);
  };
  if (o.per_parameter()) {
    for (const auto& e : entries) {
      const int64_t b = bucket_of(e.id);
      add_group(bucket_label[static_cast<size_t>(b)], bucket_lr[static_cast<size_t>(b)],
                decays(e.name) ? o.weight_decay() : 0.0);
      add_param(e);
    }
  } else {
    const bool split = o.weight_decay() != 0.0;
    for (int64_t b = 0; b < static_cast<int64_t>(bucket_lr.size()); ++b) {
      for (int pass = 0; pass < (split ? 2 : 1); ++pass) {  // pass 0: no decay, 1: decay
        bool opened = false;
        for (const auto& e : entries) {
          if (bucket_of(e.id) != b) continue;
          if (split && decays(e.name) != (pass == 1)) continue;
          if (!opened) {
            add_group(bucket_label[static_cast<size_t>(b)], bucket_lr[static_cast<size_t>(b)],
                      split && pass == 0 ? 0.0 : o.weight_decay());
            opened = true;
          }
          add_param(e);
        }
      }
    }
  }
  // Fail now, not at the optimizer's constructor, if weight decay has no home.
  OptimizerOptions probe = base_;
  for (const auto& g : info_) detail::set_weight_decay(probe, g.weight_decay);
}

template <typename OptimizerOptions>
std::unique_ptr<OptimizerOptions> LayerwiseLRGroups<OptimizerOptions>::group_options(
    size_t g) const {
  auto options = std::make_unique<OptimizerOptions>(base_);
  options->set_lr(info_[g].lr);
  detail::set_weight_decay(*options, info_[g].weight_decay);
  return options;
}

template <typename OptimizerOptions>
std::vector<torch::optim::OptimizerParamGroup> LayerwiseLRGroups<OptimizerOptions>::param_groups()
    const {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.reserve(info_.size());
  for (size_t g = 0; g < info_.size(); ++g) groups.emplace_back(params_[g], group_options(g));
  return groups;
}

template <typename OptimizerOptions>
void LayerwiseLRGroups<OptimizerOptions>::apply_to(torch::optim::Optimizer& optimizer) const {
  if (dynamic_cast<const OptimizerOptions*>(&optimizer.defaults()) == nullptr) {
    throw std::invalid_argument(
        "LayerwiseLRGroups::apply_to: the optimizer's options are not of this object's options "
        "type");
  }
  auto& groups = optimizer.param_groups();
  if (groups.size() != info_.size()) {
    throw std::invalid_argument(
        "LayerwiseLRGroups::apply_to: the optimizer has " + std::to_string(groups.size()) +
        " parameter groups, these LLRD groups are " + std::to_string(info_.size()));
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto& have = groups[g].params();
    bool same = have.size() == params_[g].size();
    for (size_t i = 0; same && i < have.size(); ++i)
      same = have[i].unsafeGetTensorImpl() == params_[g][i].unsafeGetTensorImpl();
    if (!same) {
      throw std::invalid_argument("LayerwiseLRGroups::apply_to: optimizer group " +
                                  std::to_string(g) +
                                  " does not hold the parameters of LLRD group " +
                                  std::to_string(g) + " (" + info_[g].label + ")");
    }
  }
  for (size_t g = 0; g < groups.size(); ++g) groups[g].set_options(group_options(g));
}

template <typename OptimizerOptions>
std::string LayerwiseLRGroups<OptimizerOptions>::describe() const {
  static const char* const kModes[] = {"none", "layerwise", "grouped"};
  std::ostringstream out;
  size_t params = 0;
  for (const auto& g : info_) params += g.parameter_names.size();
  out << "LayerwiseLRGroups: mode " << kModes[static_cast<int>(options_.mode())] << ", "
      << num_layers_ << " layers, " << info_.size() << " groups, " << params << " parameters\n";
  out.precision(10);
  for (size_t g = 0; g < info_.size(); ++g) {
    const auto& i = info_[g];
    out << "  group " << g << ": " << i.label;
    if (i.parameter_names.size() == 1) out << " (" << i.parameter_names.front() << ")";
    out << ", " << i.parameter_names.size() << " params, " << i.numel << " elements, lr " << i.lr
        << ", weight_decay " << i.weight_decay << "\n";
  }
  return out.str();
}

}  // namespace finetune
