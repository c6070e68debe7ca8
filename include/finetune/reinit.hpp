// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// Re-initialize the top n pretrained blocks (and the pooler) before
// fine-tuning: their weights are specialised to the pre-training task and
// transfer worse than a fresh start (Zhang et al., "Revisiting Few-sample BERT
// Fine-tuning", ICLR 2021). Same scheme as Hugging Face's
// PreTrainedModel._init_weights and the article's notebook: Linear weight
// ~ N(0, initializer_range), bias 0; LayerNorm weight 1, bias 0; optionally
// Embedding ~ N(0, initializer_range) with the padding row zeroed.
#pragma once

#include <finetune/compat.hpp>

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace finetune {

// ===========================================================================
// Declarations
// ===========================================================================

/// Options of ReinitTopLayers.
struct ReinitTopLayersOptions {
  /// Number of top blocks to re-initialize (the article: 5 of roberta-base's
  /// 12). 0: do nothing at all (the extra modules are left alone too, as in
  /// the notebook). Negative: std::invalid_argument.
  /* implicit */ ReinitTopLayersOptions(int64_t n) : n_(n) {}
  TORCH_ARG(int64_t, n);
  /// Standard deviation of the normal init (config.initializer_range);
  /// default 0.02 (roberta-base).
  TORCH_ARG(double, initializer_range) = 0.02;
  /// Also re-initialize Embedding modules found in the blocks or the extra
  /// modules (the notebook leaves this commented out); default false.
  TORCH_ARG(bool, reinit_embeddings) = false;
  /// Seed for a private generator per device type (so the global RNG is not
  /// touched); nullopt (default): the device's default generator.
  TORCH_ARG(c10::optional<uint64_t>, seed) = c10::nullopt;
  /// Name of the stack in the report's paths (HF's roberta: "encoder.layer");
  /// default "layer".
  TORCH_ARG(std::string, layers_name) = "layer";
};

/// What ReinitTopLayers reset.
struct ReinitReport {
  struct Entry {
    std::string path;  ///< e.g. "layer.11.attention.self.query" or "pooler.dense"
    std::string kind;  ///< "Linear", "LayerNorm" or "Embedding"
    int64_t elements;  ///< parameter elements written
  };
  std::vector<Entry> reset;            ///< in the order they were initialized
  std::vector<std::string> skipped;    ///< modules with own parameters of other types, untouched
  std::vector<int64_t> layer_indices;  ///< stack indices re-initialized, top first
  int64_t linear = 0;
  int64_t layer_norm = 0;
  int64_t embedding = 0;
  int64_t elements = 0;
  /// One line per reset module, then the totals.
  std::string str() const;
};

std::ostream& operator<<(std::ostream& out, const ReinitReport& report);

/// Re-initializes the top `n` blocks of a layer stack plus extra modules
/// (e.g. the pooler), in place, under NoGradGuard, on the parameters' own
/// devices and dtypes. Order (it fixes which random numbers go where): the
/// extra modules first, in the given order, then the blocks from the top
/// down; within a module children before their parent, like nn.Module.apply
/// in the notebook.
class ReinitTopLayers {
 public:
  using NamedModules = std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>>;

  /// Throws std::invalid_argument for n < 0 or an initializer_range that is
  /// negative or not finite.
  explicit ReinitTopLayers(ReinitTopLayersOptions options);

  /// `layers`: the stack bottom to top (layers[size-1] is the top).
  /// `extra`: (name, module) pairs re-initialized as well, e.g.
  /// {{"pooler", model->pooler.ptr()}}. `generator`: if defined, used for
  /// every normal draw instead of seed/default (must be on the parameters'
  /// device type). Throws std::invalid_argument when n exceeds the stack, a
  /// module is null, the generator is on another device type than a weight
  /// it would draw, a weight to draw is not floating point, or an Embedding's
  /// padding_idx is out of range: all checked before the first write, so a
  /// failed call leaves every module as it was.
  ReinitReport operator()(const std::vector<std::shared_ptr<torch::nn::Module>>& layers,
                          const NamedModules& extra = {}, at::Generator generator = {}) const;
  /// Same for a torch::nn::ModuleList.
  ReinitReport operator()(const torch::nn::ModuleList& layers, const NamedModules& extra = {},
                          at::Generator generator = {}) const;
  /// Same for any range of std::shared_ptr<T> or ModuleHolder<T> (T a Module).
  template <typename Range>
  ReinitReport operator()(const Range& layers, const NamedModules& extra = {},
                          at::Generator generator = {}) const;

  const ReinitTopLayersOptions& options() const { return options_; }

 private:
  struct Draw;
  struct Write;
  void plan(torch::nn::Module& module, const std::string& path, Draw& draw, ReinitReport& report,
            std::vector<Write>& writes) const;

  ReinitTopLayersOptions options_;
};

// ===========================================================================
// Definitions
// ===========================================================================

inline std::string ReinitReport::str() const {
  std::ostringstream out;
  for (const auto& e : reset) out << e.path << " (" << e.kind << ", " << e.elements << ")\n";
  for (const auto& s : skipped) out << s << " (skipped: not Linear/LayerNorm/Embedding)\n";
  out << "re-initialized " << linear << " Linear, " << layer_norm << " LayerNorm, " << embedding
      << " Embedding: " << elements << " elements";
  if (!layer_indices.empty()) {
    out << "; layers";
    for (auto i : layer_indices) out << ' ' << i;
  }
  out << '\n';
  return out.str();
}

inline std::ostream& operator<<(std::ostream& out, const ReinitReport& report) {
  return out << report.str();
}

// Picks the generator of each draw: the caller's, one seeded per device type,
// or the default (undefined generator). Resolved while planning, before the
// first write, so that a bad generator or device leaves every module as it was.
struct ReinitTopLayers::Draw {
  at::Generator given;
  c10::optional<uint64_t> seed;
  std::map<int, at::Generator> seeded;  // by DeviceType

  at::Generator for_tensor(const torch::Tensor& t, const std::string& path) {
    if (!t.is_floating_point()) {
      throw std::invalid_argument("ReinitTopLayers: '" + path + "' has dtype " +
                                  std::string(c10::toString(t.scalar_type())) +
                                  "; a normal init needs floating-point parameters");
    }
    if (given.defined()) {
      if (given.device().type() != t.device().type()) {
        throw std::invalid_argument("ReinitTopLayers: the generator is on " + given.device().str() +
                                    " but '" + path + "' is on " + t.device().str());
      }
      return given;
    }
    if (!seed) return at::Generator();
    const int key = static_cast<int>(t.device().type());
    auto found = seeded.find(key);
    if (found != seeded.end()) return found->second;
    // A private copy of the device's default generator, so that any backend
    // works and the global RNG stream is left alone.
    at::Generator fresh;
    try {
      at::Generator base = at::globalContext().defaultGenerator(t.device());  // a handle
      std::lock_guard<std::mutex> lock(base.mutex());
      fresh = base.clone();
    } catch (const c10::Error& e) {
      throw std::invalid_argument("ReinitTopLayers: cannot seed a generator for '" + path +
                                  "' on " + t.device().str() + ": " + e.what_without_backtrace());
    }
    fresh.set_current_seed(*seed);
    seeded.emplace(key, fresh);
    return fresh;
  }
};

// One write of the plan: a normal draw, or a fill (1 or 0).
struct ReinitTopLayers::Write {
  torch::Tensor tensor;
  bool normal;
  double value;  // the fill value, or the normal's standard deviation
  at::Generator generator;
};

inline ReinitTopLayers::ReinitTopLayers(ReinitTopLayersOptions options)
    : options_(std::move(options)) {
  if (options_.n() < 0) {
    throw std::invalid_argument("ReinitTopLayers: n must be >= 0, got " +
                                std::to_string(options_.n()));
  }
  const double std = options_.initializer_range();
  if (!std::isfinite(std) || std < 0.0) {
    throw std::invalid_argument("ReinitTopLayers: initializer_range must be finite and >= 0, got " +
                                std::to_string(std));
  }
}

inline void ReinitTopLayers::plan(torch::nn::Module& module, const std::string& path, Draw& draw,
                                  ReinitReport& report, std::vector<Write>& writes) const {
  for (const auto& child : module.named_children()) {
    plan(*child.value(), path.empty() ? child.key() : path + "." + child.key(), draw, report,
         writes);
  }
  const double std = options_.initializer_range();
  const std::string name = path.empty() ? std::string("(root)") : path;
  auto normal = [&](const torch::Tensor& t) {
    writes.push_back({t, true, std, draw.for_tensor(t, name)});
  };
  auto fill = [&](const torch::Tensor& t, double value) {
    writes.push_back({t, false, value, at::Generator()});
  };
  if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(&module)) {
    normal(linear->weight);
    int64_t n = linear->weight.numel();
    if (linear->bias.defined()) {
      fill(linear->bias, 0.0);
      n += linear->bias.numel();
    }
    report.reset.push_back({name, "Linear", n});
    ++report.linear;
    report.elements += n;
  } else if (auto* norm = dynamic_cast<torch::nn::LayerNormImpl*>(&module)) {
    int64_t n = 0;
    if (norm->weight.defined()) {
      fill(norm->weight, 1.0);
      n += norm->weight.numel();
    }
    if (norm->bias.defined()) {
      fill(norm->bias, 0.0);
      n += norm->bias.numel();
    }
    report.reset.push_back({name, "LayerNorm", n});
    ++report.layer_norm;
    report.elements += n;
  } else if (auto* embedding = dynamic_cast<torch::nn::EmbeddingImpl*>(&module);
             embedding != nullptr && options_.reinit_embeddings()) {
    const auto& weight = embedding->weight;
    normal(weight);
    if (const auto& pad = embedding->options.padding_idx()) {
      const int64_t rows = weight.dim() > 0 ? weight.size(0) : 0;
      const int64_t row = *pad < 0 ? *pad + rows : *pad;
      if (row < 0 || row >= rows) {
        throw std::invalid_argument("ReinitTopLayers: '" + name + "' has padding_idx " +
                                    std::to_string(*pad) + " but " + std::to_string(rows) +
                                    " rows");
      }
      fill(weight[row], 0.0);
    }
    report.reset.push_back({name, "Embedding", weight.numel()});
    ++report.embedding;
    report.elements += weight.numel();
  } else {
    for (const auto& p : module.named_parameters(/*recurse=*/false)) {
      if (p.value().defined()) {
        report.skipped.push_back(name);
        break;
      }
    }
  }
}

inline ReinitReport ReinitTopLayers::operator()(
    const std::vector<std::shared_ptr<torch::nn::Module>>& layers, const NamedModules& extra,
    at::Generator generator) const {
  const int64_t n = options_.n();
  const int64_t size = static_cast<int64_t>(layers.size());
  if (n > size) {
    throw std::invalid_argument("ReinitTopLayers: n = " + std::to_string(n) +
                                " but the layer stack has only " + std::to_string(size) +
                                " layers");
  }
  ReinitReport report;
  if (n == 0) return report;
  for (const auto& [name, module] : extra) {
    if (!module)
      throw std::invalid_argument("ReinitTopLayers: extra module '" + name + "' is null");
  }
  for (int64_t i = size - n; i < size; ++i) {
    if (!layers[static_cast<size_t>(i)]) {
      throw std::invalid_argument("ReinitTopLayers: layer " + std::to_string(i) + " is null");
    }
  }
  torch::NoGradGuard no_grad;
  // Plan every write (and check every generator, device and dtype) first,
  // then write: an invalid input throws with all modules untouched.
  Draw draw{std::move(generator), options_.seed(), {}};
  std::vector<Write> writes;
  for (const auto& [name, module] : extra) plan(*module, name, draw, report, writes);
  for (int64_t i = size - 1; i >= size - n; --i) {
    plan(*layers[static_cast<size_t>(i)], options_.layers_name() + "." + std::to_string(i), draw,
         report, writes);
    report.layer_indices.push_back(i);
  }
  for (auto& w : writes) {
    if (w.normal) {
      w.tensor.normal_(0.0, w.value, w.generator);
    } else {
      w.tensor.fill_(w.value);
    }
  }
  return report;
}

inline ReinitReport ReinitTopLayers::operator()(const torch::nn::ModuleList& layers,
                                                const NamedModules& extra,
                                                at::Generator generator) const {
  std::vector<std::shared_ptr<torch::nn::Module>> stack;
  for (size_t i = 0; i < layers->size(); ++i) stack.push_back(layers->ptr(i));
  return (*this)(stack, extra, std::move(generator));
}

namespace detail {
template <typename T>
std::shared_ptr<torch::nn::Module> reinit_as_module(const std::shared_ptr<T>& p) {
  return p;
}
template <typename T>
std::shared_ptr<torch::nn::Module> reinit_as_module(const torch::nn::ModuleHolder<T>& h) {
  return h.ptr();
}
}  // namespace detail

template <typename Range>
ReinitReport ReinitTopLayers::operator()(const Range& layers, const NamedModules& extra,
                                         at::Generator generator) const {
  std::vector<std::shared_ptr<torch::nn::Module>> stack;
  for (const auto& layer : layers) stack.push_back(detail::reinit_as_module(layer));
  return (*this)(stack, extra, std::move(generator));
}

}  // namespace finetune
