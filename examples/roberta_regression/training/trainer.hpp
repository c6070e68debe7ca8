// The article's fine-tuning experiment (train-roberta-advanced.ipynb), composed
// from the library's five techniques: one fold = one run of the notebook's
// `run_training` loop. Example code, not library API.
//
// Inside a step, as in the notebook: forward, sqrt(MSE), backward,
// optimizer.step(), record the learning rates, then one scheduler step (the
// SWAScheduler: warm-up/linear schedule, then SWALR from the SWA start) and,
// in SWA epochs, update the average; then the evaluator decides whether to
// evaluate. With --grad-accum K one optimizer step takes K batches. Nothing
// in a step waits for the device: losses are summed on the device and read
// when an evaluation happens. A finetune::TrainingState holds everything the
// run needs to continue after a kill (--save-state-every, --resume).
// Launched by torchrun (a finetune::Distributed that is active), the loop is
// data-parallel: see train_fold() and docs/distributed_example.md.
#pragma once

#include <torch/torch.h>

#include <finetune/distributed.hpp>
#include <finetune/finetune.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/data.hpp"
#include "data/folds.hpp"
#include "model/model_names.hpp"
#include "model/roberta_config.hpp"
#include "model/roberta_model.hpp"
#include "text/model_tokenizer.hpp"

namespace roberta_regression {

// ---------------------------------------------------------------------------
// Declarations
// ---------------------------------------------------------------------------

/// Everything one `train` run needs. Defaults: the notebook's settings with
/// every technique switched off (its "basic fine-tuning" run).
struct TrainSettings {
  std::string data;       ///< CommonLit-shaped CSV (.csv or .csv.gz)
  std::string model_dir;  ///< config.json, model.safetensors, the tokenizer; or "minilm"
  std::string out_dir = "runs/train";  ///< per-fold checkpoints, histories, curves
  bool random_init = false;            ///< HF-initialized weights instead of model.safetensors

  finetune::LLRDMode llrd = finetune::LLRDMode::none;
  double lr_scale = 1.0;  ///< multiplies every rate, swa_lr included
  int64_t warmup_steps = 0;
  int64_t reinit_layers = 0;     ///< top layers (and the pooler) re-initialized
  std::optional<double> swa_lr;  ///< unset: no SWA (before lr_scale)
  int64_t swa_start_epoch = 3;   ///< first SWA epoch (0-based, as the notebook)
  int64_t swa_anneal_steps = 10;
  std::optional<int64_t> eval_every;  ///< unset: evaluate once per epoch
  int64_t eval_every_from_epoch = 2;
  int64_t patience = 50;   ///< the notebook's EARLY_STOP_THRESHOLD
  int64_t grad_accum = 1;  ///< batches per optimizer step (gradient accumulation)
  /// Gradual unfreezing (ULMFiT): unset = off; else one more block (from the
  /// top layer down to the embeddings) every N `unfreeze_unit`s.
  std::optional<int64_t> unfreeze_every;
  std::string unfreeze_unit = "epochs";  ///< "epochs" or "steps" (optimizer steps)
  std::optional<double> dropout;         ///< overrides config.json's dropout probabilities
  /// unset: no training state. N >= 1: <out>/fold<k>/state.pt every N
  /// optimizer steps; N = 0 (and N >= 1): at Ctrl-C and at the fold's end.
  std::optional<int64_t> save_state_every;
  bool resume = false;  ///< continue every fold from its state.pt in out_dir
  /// The notebook's exact loop where our defaults deliberately differ
  /// (docs/roberta_regression.md, "Parity with the notebook"): validation RMSE
  /// = mean of each validation batch's RMSE; no weight decay without LLRD; and
  /// transformers.AdamW's update (eps added to sqrt(v) before the bias
  /// correction, decoupled weight decay applied after the Adam step).
  bool notebook_exact = false;
  /// Non-empty: write <trace_dir>/fold<k>/ (initial.safetensors, trace.json),
  /// what a re-run of the loop elsewhere needs (tests/reference/check_notebook_loop.py).
  std::string trace_dir;

  int64_t folds = 5;
  std::optional<int64_t> fold;  ///< unset: every fold
  int64_t epochs = 15;
  int64_t batch_size = 16;
  int64_t val_batch_size = 64;
  int64_t max_length = 250;
  uint32_t seed = 3377;
  std::string device = "cpu";
  /// "auto" (on when the CSV has an `address` column, i.e. the embedded data,
  /// whose target is a year), "on" or "off". Training then fits the
  /// standardized target; RMSE is always reported in the target's units.
  std::string standardize_target = "auto";
  /// Use only every N-th row of the CSV (its rows 0, N, 2N, ..., after the
  /// dropped ones): the same data, a smaller run (`make demo` uses 2). 1: all.
  int64_t subsample = 1;
  /// Data-parallel runs (torchrun): after every averaged step and evaluation,
  /// check that the SWA average and the weights are identical on every rank
  /// (a checksum reduction); a difference throws std::runtime_error.
  bool check_replicas = false;
  /// Data-parallel runs: the other ranks print their evaluation lines and fold
  /// summaries too, as "rank <r>: ..." (for tests; rank 0 alone writes files).
  bool log_all_ranks = false;
  /// "fp32" (default: the loop as it always was), "bf16" or "fp16": forward
  /// passes (training and evaluation) under LibTorch's autocast in that
  /// dtype, float32 master weights; fp16 scales the loss with a
  /// finetune::GradScaler, whose skipped steps move nothing (docs/mixed_precision.md).
  std::string precision = "fp32";
};

/// The autocast dtype of --precision: float32 (off), bfloat16 or float16.
/// Throws std::invalid_argument naming the flag on anything else.
torch::Dtype precision_dtype(const std::string& precision);

/// The article's learning rates for a mode, times `scale`.
finetune::LayerwiseLROptions article_rates(finetune::LLRDMode mode, double scale);
/// One line: the rates a mode uses, e.g. "top 3.5e-06, x0.9 per layer down, head 3.6e-06".
std::string describe_rates(finetune::LLRDMode mode, double scale, std::optional<double> swa_lr);
finetune::LLRDMode parse_llrd(const std::string& name);
std::string llrd_name(finetune::LLRDMode mode);

/// The data set encoded once: ids and masks [N, max_length] (int64, CPU),
/// targets [N] (float64, target units), the fold of every row.
struct EncodedDataset {
  std::string path;
  torch::Tensor input_ids, attention_mask, targets;
  std::vector<int64_t> fold_of_row;
  bool grouped = false;  ///< folds by address (the embedded data)
  bool standardize = false;
  int64_t dropped = 0;
};

/// Reads the CSV, checks the tokenizer against the model, encodes every
/// excerpt (truncated and padded to max_length, as the notebook) and makes
/// the notebook's folds (grouped by address when the CSV has one).
EncodedDataset load_dataset(const TrainSettings& settings, ModelTokenizer& tokenizer);

/// The model folder's files, checked: config.json parsed, the family's
/// tokenizer loaded (RoBERTa: vocab.json, merges.txt; BERT: vocab.txt) and
/// consistent with the config. `dir` may be a documented name
/// (resolve_model_dir: "minilm").
struct ModelFiles {
  std::string dir;
  RobertaConfig config;
  std::unique_ptr<ModelTokenizer> tokenizer;
};
ModelFiles load_model_files(const std::string& dir, int64_t max_length);

/// A regressor for one fold: HF initialization (global generator, seeded by
/// the caller), then the pretrained weights unless random_init. Throws
/// std::invalid_argument naming the file when an encoder weight is missing or
/// a shape does not match the config.
/// `dropout` overrides config.json's hidden and attention dropout probabilities.
RobertaRegressor build_regressor(const ModelFiles& files, bool random_init,
                                 std::optional<double> dropout = std::nullopt);

/// The notebook's per-layer lr columns: embeddings, layer0..layerN-1, pooler, regressor.
std::vector<std::string> layer_lr_columns(int64_t num_layers);

/// Per-step learning rates as the notebook's `collect_lr_by_layers`, in
/// layer_lr_columns' order.
class LayerLRProbe {
 public:
  LayerLRProbe(const finetune::LayerwiseLRGroups<torch::optim::AdamWOptions>& groups,
               int64_t num_layers);
  std::vector<std::string> columns() const;
  std::vector<double> read(const torch::optim::Optimizer& optimizer) const;

 private:
  std::vector<size_t> group_of_column_;
  int64_t num_layers_;
};

/// One point of the train/validation curve (one raw evaluation).
struct CurvePoint {
  int64_t epoch, batch, step;
  double train_rmse;  ///< mean training loss since the epoch began, in target units
  double val_rmse;
  std::optional<double> swa_val_rmse;
};

/// What one fold's run gives.
struct FoldResult {
  int64_t fold = 0;
  int64_t n_train = 0, n_val = 0;
  double best_rmse = 0.0;               ///< the fold's score
  std::optional<double> best_swa_rmse;  ///< best of the averaged weights (SWA runs)
  int64_t steps = 0, evaluations = 0;
  bool early_stopped = false;
  bool interrupted = false;
  double seconds = 0.0;
  std::vector<CurvePoint> curve;
  std::vector<std::vector<double>> lrs;  ///< per step, LayerLRProbe's columns
  std::vector<std::string> lr_columns;
  std::string checkpoint_dir;
  bool resumed = false;  ///< continued from a saved training state
  /// Optimizer steps skipped (--precision fp16: an inf/NaN gradient once
  /// unscaled); `steps` counts only the steps taken.
  int64_t skipped_steps = 0;
};

/// The lr CSV (`--lr-log`, and the figures' data): a header line of
/// `[fold,]step,<columns>`, then one row per step of a fold, lrs as %.17g.
void write_lr_csv_header(std::ostream& out, const std::vector<std::string>& columns,
                         bool with_fold);
void write_lr_csv_rows(std::ostream& out, const FoldResult& result, bool with_fold);

/// Hooks of a fold run (all optional).
struct FoldCallbacks {
  /// Evaluation log lines (the evaluator's), e.g. "fold 0, epoch 2, batch 30, RMSE ...".
  std::function<void(const std::string&)> log;
  /// After every step: (steps done, steps planned at most).
  std::function<void(int64_t, int64_t)> progress;
  /// After every step's optimizer step and, in SWA epochs, the update of the
  /// average: (steps done, whether this step was averaged, the model with its
  /// training weights). For tests and diagnostics; it must not change the model.
  std::function<void(int64_t, bool, const torch::nn::Module&)> after_step;
  /// Before each optimizer step attempt (1-based, skipped ones counted), with
  /// the gradients accumulated (fp16: as the scaler holds them): for tests
  /// (under --precision fp16 a non-finite gradient skips the step).
  std::function<void(int64_t attempt, torch::nn::Module&)> before_step;
};

/// Where a fold's training state lives: <out>/fold<k>/state.pt.
std::string state_path(const TrainSettings& settings, int64_t fold);

/// Trains fold `fold` (validation = rows of that fold) and returns its result.
/// Stops early on the evaluator's signal or when interrupt_requested() is set
/// (after the current step; the best checkpoint on disk stays intact).
///
/// With an active `dist` (torchrun), data-parallel: every rank takes its
/// finetune::shard_range of each global batch of `batch_size` rows (the same
/// permutation everywhere), gradients are summed over ranks before each
/// optimizer step so that the step equals the single-process one, the
/// validation rows are sharded and their squared errors summed, and only the
/// writing rank (rank 0) writes checkpoints, history, state and trace. Null or
/// inactive: the single-process loop, unchanged.
FoldResult train_fold(const TrainSettings& settings, const ModelFiles& files,
                      const EncodedDataset& data, int64_t fold, const FoldCallbacks& callbacks,
                      finetune::Distributed* dist = nullptr);

/// Set by the CLI's SIGINT handler; the loop stops after the current step.
inline std::atomic<bool>& interrupt_requested() {
  static std::atomic<bool> flag{false};
  return flag;
}

/// numpy's std (ddof 0) and mean of a list.
double mean_of(const std::vector<double>& v);
double std_of(const std::vector<double>& v);

// ---------------------------------------------------------------------------
// Implementation
// ---------------------------------------------------------------------------

inline finetune::LayerwiseLROptions article_rates(finetune::LLRDMode mode, double scale) {
  if (!(scale > 0.0) || !std::isfinite(scale))
    throw std::invalid_argument("--lr-scale must be a positive number, got " +
                                std::to_string(scale));
  switch (mode) {
    case finetune::LLRDMode::none:  // the notebook: AdamW(model.parameters(), lr=1e-6)
      return finetune::LayerwiseLROptions(1e-6 * scale).mode(finetune::LLRDMode::none);
    case finetune::LLRDMode::layerwise: {
      auto o = finetune::LayerwiseLROptions::article_layerwise();
      return o.lr(o.lr() * scale).head_lr(*o.head_lr() * scale);
    }
    case finetune::LLRDMode::grouped: {
      auto o = finetune::LayerwiseLROptions::article_grouped();
      return o.lr(o.lr() * scale);  // head = lr * head_scale (3.6)
    }
  }
  throw std::invalid_argument("unknown LLRD mode");
}

inline std::string describe_rates(finetune::LLRDMode mode, double scale,
                                  std::optional<double> swa_lr) {
  const auto o = article_rates(mode, scale);
  std::ostringstream out;
  out.precision(3);
  switch (mode) {
    case finetune::LLRDMode::none:
      out << "all " << o.lr();
      break;
    case finetune::LLRDMode::layerwise:
      out << "top layer " << o.lr() << ", x" << o.decay() << " per layer down, head "
          << *o.head_lr();
      break;
    case finetune::LLRDMode::grouped:
      out << "layer groups " << o.lr() * o.group_scales()[0] << " / "
          << o.lr() * o.group_scales()[1] << " / " << o.lr() * o.group_scales()[2] << ", head "
          << o.lr() * o.head_scale();
      break;
  }
  if (swa_lr) out << "; swa_lr " << *swa_lr * scale;
  return out.str();
}

inline torch::Dtype precision_dtype(const std::string& precision) {
  if (precision == "fp32") return torch::kFloat32;
  if (precision == "bf16") return torch::kBFloat16;
  if (precision == "fp16") return torch::kFloat16;
  throw std::invalid_argument("--precision: expected fp32, bf16 or fp16, got '" + precision + "'");
}

inline finetune::LLRDMode parse_llrd(const std::string& name) {
  if (name == "none") return finetune::LLRDMode::none;
  if (name == "layerwise") return finetune::LLRDMode::layerwise;
  if (name == "grouped") return finetune::LLRDMode::grouped;
  throw std::invalid_argument("--llrd: expected none, layerwise or grouped, got '" + name + "'");
}

inline std::string llrd_name(finetune::LLRDMode mode) {
  switch (mode) {
    case finetune::LLRDMode::none:
      return "none";
    case finetune::LLRDMode::layerwise:
      return "layerwise";
    case finetune::LLRDMode::grouped:
      return "grouped";
  }
  return "?";
}

inline ModelFiles load_model_files(const std::string& name_or_dir, int64_t max_length) {
  namespace fs = std::filesystem;
  const std::string dir = resolve_model_dir(name_or_dir);
  ModelFiles files;
  files.dir = dir;
  if (!fs::is_directory(dir))
    throw std::invalid_argument("--model " + dir +
                                ": not a folder (expected config.json, model.safetensors and "
                                "the tokenizer: vocab.json and merges.txt, or vocab.txt)");
  files.config = RobertaConfig::from_json_file((fs::path(dir) / "config.json").string());
  files.tokenizer = std::make_unique<ModelTokenizer>(
      ModelTokenizer::from_model_dir(dir, files.config.model_type));
  const auto& c = files.config;
  const std::string vocab = dir + "/" + files.tokenizer->vocab_file();
  if (files.tokenizer->vocab_size() > c.vocab_size)
    throw std::invalid_argument(vocab + " has " + std::to_string(files.tokenizer->vocab_size()) +
                                " tokens but config.json's vocab_size is " +
                                std::to_string(c.vocab_size) +
                                ": the tokenizer does not belong to this model");
  if (files.tokenizer->pad_token_id() != c.pad_token_id)
    throw std::invalid_argument(
        vocab + ": the padding token is id " + std::to_string(files.tokenizer->pad_token_id()) +
        " but config.json's pad_token_id is " + std::to_string(c.pad_token_id));
  // RoBERTa's positions start after padding_idx (max_length + pad + 1
  // positions); BERT's at 0.
  const int64_t most =
      c.is_bert() ? c.max_position_embeddings : c.max_position_embeddings - c.pad_token_id - 1;
  if (max_length < 2 || max_length > most)
    throw std::invalid_argument("--max-length " + std::to_string(max_length) + ": the model at " +
                                dir + " takes 2 to " + std::to_string(most) +
                                " tokens (max_position_embeddings " +
                                std::to_string(c.max_position_embeddings) + ")");
  return files;
}

inline RobertaRegressor build_regressor(const ModelFiles& files, bool random_init,
                                        std::optional<double> dropout) {
  RobertaConfig config = files.config;
  if (dropout) {
    if (!(*dropout >= 0.0 && *dropout < 1.0))
      throw std::invalid_argument("--dropout must be in [0, 1), got " + std::to_string(*dropout));
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = *dropout;
  }
  RobertaRegressor model(config);
  // HF's from_pretrained: weights the file lacks (roberta-base has no pooler)
  // keep HF's initialization; the regressor keeps nn.Linear's, as the notebook.
  init_roberta_weights(*model->roberta, files.config.initializer_range);
  if (random_init) return model;
  const std::string path = (std::filesystem::path(files.dir) / "model.safetensors").string();
  const LoadReport report = load_safetensors_weights(*model, path);
  std::vector<std::string> missing_encoder;
  for (const auto& name : report.missing)
    if (name.rfind("regressor.", 0) != 0 && name.rfind("roberta.pooler.", 0) != 0)
      missing_encoder.push_back(name);
  if (!missing_encoder.empty()) {
    std::string list;
    for (size_t i = 0; i < missing_encoder.size() && i < 5; ++i)
      list += (i ? ", " : "") + missing_encoder[i];
    throw std::invalid_argument(path + " lacks " + std::to_string(missing_encoder.size()) +
                                " encoder weight(s) that config.json implies: " + list +
                                (missing_encoder.size() > 5 ? ", ..." : ""));
  }
  return model;
}

inline EncodedDataset load_dataset(const TrainSettings& s, ModelTokenizer& tokenizer) {
  if (s.folds < 2)
    throw std::invalid_argument("--folds must be at least 2, got " + std::to_string(s.folds));
  if (s.fold && (*s.fold < 0 || *s.fold >= s.folds))
    throw std::invalid_argument("--fold " + std::to_string(*s.fold) + ": expected 0 to " +
                                std::to_string(s.folds - 1));
  if (s.subsample < 1)
    throw std::invalid_argument("--subsample must be at least 1, got " +
                                std::to_string(s.subsample));
  CommonLitData csv = read_commonlit_csv(s.data);
  if (s.subsample > 1) {
    std::vector<CommonLitRow> kept;
    for (size_t i = 0; i < csv.rows.size(); i += static_cast<size_t>(s.subsample))
      kept.push_back(std::move(csv.rows[i]));
    csv.rows = std::move(kept);
  }
  const int64_t n = static_cast<int64_t>(csv.rows.size());
  EncodedDataset d;
  d.path = s.data;
  d.dropped = csv.dropped;
  d.grouped = csv.has_address;
  if (s.standardize_target == "auto")
    d.standardize = csv.has_address;
  else if (s.standardize_target == "on" || s.standardize_target == "off")
    d.standardize = s.standardize_target == "on";
  else
    throw std::invalid_argument("--standardize-target: expected auto, on or off, got '" +
                                s.standardize_target + "'");

  std::vector<double> targets;
  std::vector<std::string> groups;
  for (const auto& row : csv.rows) {
    targets.push_back(row.target);
    groups.push_back(row.address);
  }
  d.fold_of_row = d.grouped ? grouped_article_folds(targets, groups, s.folds, s.seed)
                            : article_folds(targets, s.folds, s.seed);
  std::vector<int64_t> rows_per_fold(static_cast<size_t>(s.folds), 0);
  for (int64_t f : d.fold_of_row) ++rows_per_fold[static_cast<size_t>(f)];
  for (int64_t f = 0; f < s.folds; ++f)
    if (rows_per_fold[static_cast<size_t>(f)] == 0)
      throw std::invalid_argument(s.data + ": " + std::to_string(n) + " rows are too few for " +
                                  std::to_string(s.folds) + " folds (fold " + std::to_string(f) +
                                  " is empty)");

  d.input_ids = torch::empty({n, s.max_length}, torch::kInt64);
  d.attention_mask = torch::empty({n, s.max_length}, torch::kInt64);
  auto ids = d.input_ids.accessor<int64_t, 2>();
  auto mask = d.attention_mask.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const Encoding e = tokenizer.encode(csv.rows[static_cast<size_t>(i)].excerpt, s.max_length);
    for (int64_t t = 0; t < s.max_length; ++t) {
      ids[i][t] = e.input_ids[static_cast<size_t>(t)];
      mask[i][t] = e.attention_mask[static_cast<size_t>(t)];
    }
  }
  d.targets = torch::tensor(targets, torch::kFloat64);
  return d;
}

inline LayerLRProbe::LayerLRProbe(
    const finetune::LayerwiseLRGroups<torch::optim::AdamWOptions>& groups, int64_t num_layers)
    : num_layers_(num_layers) {
  auto group_of = [&](const std::string& parameter) {
    for (size_t g = 0; g < groups.size(); ++g)
      for (const auto& name : groups.groups()[g].parameter_names)
        if (name == parameter) return g;
    throw std::invalid_argument("lr log: no optimizer group holds " + parameter);
  };
  group_of_column_.push_back(group_of("roberta.embeddings.word_embeddings.weight"));
  for (int64_t i = 0; i < num_layers; ++i)
    group_of_column_.push_back(
        group_of("roberta.encoder.layer." + std::to_string(i) + ".attention.self.query.weight"));
  group_of_column_.push_back(group_of("roberta.pooler.dense.weight"));
  group_of_column_.push_back(group_of("regressor.weight"));
}

inline std::vector<std::string> layer_lr_columns(int64_t num_layers) {
  std::vector<std::string> c{"embeddings"};
  for (int64_t i = 0; i < num_layers; ++i) c.push_back("layer" + std::to_string(i));
  c.push_back("pooler");
  c.push_back("regressor");
  return c;
}

inline std::vector<std::string> LayerLRProbe::columns() const {
  return layer_lr_columns(num_layers_);
}

inline void write_lr_csv_header(std::ostream& out, const std::vector<std::string>& columns,
                                bool with_fold) {
  out << (with_fold ? "fold,step" : "step");
  for (const auto& c : columns) out << ',' << c;
  out << '\n';
}

inline void write_lr_csv_rows(std::ostream& out, const FoldResult& result, bool with_fold) {
  char number[32];
  for (size_t step = 0; step < result.lrs.size(); ++step) {
    if (with_fold) out << result.fold << ',';
    out << step;
    for (double lr : result.lrs[step]) {
      std::snprintf(number, sizeof number, ",%.17g", lr);
      out << number;
    }
    out << '\n';
  }
}

inline std::vector<double> LayerLRProbe::read(const torch::optim::Optimizer& optimizer) const {
  std::vector<double> out;
  out.reserve(group_of_column_.size());
  for (size_t g : group_of_column_) out.push_back(optimizer.param_groups()[g].options().get_lr());
  return out;
}

inline double mean_of(const std::vector<double>& v) {
  double sum = 0.0;
  for (double x : v) sum += x;
  return v.empty() ? std::nan("") : sum / static_cast<double>(v.size());
}

inline double std_of(const std::vector<double>& v) {
  const double m = mean_of(v);
  double sum = 0.0;
  for (double x : v) sum += (x - m) * (x - m);
  return v.empty() ? std::nan("") : std::sqrt(sum / static_cast<double>(v.size()));
}

namespace detail {

/// Root mean squared error of `model` over rows `ids`/`mask`/`target` (on the
/// model's device), in target units: one host read at the end. With
/// `mean_of_batches` (--notebook-exact), the notebook's validate_fn instead:
/// the mean over batches of `batch_size` rows of each batch's RMSE.
inline double validation_rmse(RobertaRegressor& model, const torch::Tensor& ids,
                              const torch::Tensor& mask, const torch::Tensor& target,
                              int64_t batch_size, double mean, double scale,
                              bool mean_of_batches = false) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const int64_t n = ids.size(0);
  torch::Tensor sum = torch::zeros({}, target.options());
  for (int64_t start = 0; start < n; start += batch_size) {
    const int64_t end = std::min(n, start + batch_size);
    const auto prediction =
        model->forward(ids.slice(0, start, end), mask.slice(0, start, end)).to(target.dtype());
    const auto squared = (prediction * scale + mean - target.slice(0, start, end)).square();
    sum += mean_of_batches ? squared.mean().sqrt() : squared.sum();
  }
  model->train(was_training);
  if (mean_of_batches)
    return sum.item<double>() / static_cast<double>((n + batch_size - 1) / batch_size);
  return std::sqrt(sum.item<double>() / static_cast<double>(n));
}

/// validation_rmse() over the ranks of an active `dist`: each rank evaluates
/// its finetune::shard_range of the rows (with `mean_of_batches`: of every
/// batch of `batch_size` rows, so that the batches are the single process's),
/// the squared-error sums are summed over ranks, and rank 0's result is
/// returned on every rank (bit-identical, for the evaluator's decisions).
inline double sharded_validation_rmse(RobertaRegressor& model, const torch::Tensor& ids,
                                      const torch::Tensor& mask, const torch::Tensor& target,
                                      int64_t batch_size, double mean, double scale,
                                      bool mean_of_batches, finetune::Distributed& dist) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const int64_t n = ids.size(0);
  const int64_t batches = (n + batch_size - 1) / batch_size;
  // One squared-error sum per batch (mean_of_batches) or one for the shard.
  torch::Tensor sums = torch::zeros({mean_of_batches ? batches : 1}, target.options());
  auto add = [&](int64_t slot, int64_t begin, int64_t end) {
    if (end <= begin) return;
    const auto prediction =
        model->forward(ids.slice(0, begin, end), mask.slice(0, begin, end)).to(target.dtype());
    sums[slot] += (prediction * scale + mean - target.slice(0, begin, end)).square().sum();
  };
  if (mean_of_batches) {
    for (int64_t b = 0; b < batches; ++b) {
      const int64_t start = b * batch_size, rows = std::min(n, start + batch_size) - start;
      const auto [first, last] = finetune::shard_range(rows, dist.rank(), dist.world_size());
      add(b, start + first, start + last);
    }
  } else {
    const auto [first, last] = finetune::shard_range(n, dist.rank(), dist.world_size());
    for (int64_t start = first; start < last; start += batch_size)
      add(0, start, std::min(last, start + batch_size));
  }
  model->train(was_training);
  const auto total = dist.all_reduce_sum(sums).to(torch::kCPU, torch::kFloat64).contiguous();
  const double* t = total.data_ptr<double>();
  double rmse = 0.0;
  if (mean_of_batches) {
    for (int64_t b = 0; b < batches; ++b) {
      const int64_t rows = std::min(n, (b + 1) * batch_size) - b * batch_size;
      rmse += std::sqrt(t[b] / static_cast<double>(rows));
    }
    rmse /= static_cast<double>(batches);
  } else {
    rmse = std::sqrt(t[0] / static_cast<double>(n));
  }
  return dist.broadcast_value(rmse);
}

}  // namespace detail

namespace detail {

/// transformers.AdamW (transformers 4.x; removed in 5), the notebook's
/// optimizer, on top of torch's AdamW (--notebook-exact). Per parameter, HF:
///   m, v as torch; p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps);
///   then p += -lr * wd * p (decoupled decay AFTER the update).
/// torch: p *= 1 - lr * wd first, then p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
/// Equal when torch's eps is eps / sqrt(1 - b2^t) at step t and its weight
/// decay is 0 with the decay applied here after the step.
class NotebookAdamW {
 public:
  explicit NotebookAdamW(torch::optim::AdamW& optimizer) : optimizer_(optimizer) {
    for (auto& group : optimizer_.param_groups()) {
      auto& o = static_cast<torch::optim::AdamWOptions&>(group.options());
      weight_decay_.push_back(o.weight_decay());
      eps_.push_back(o.eps());
      o.weight_decay(0.0);
    }
  }
  /// Before optimizer.step() number `step` (1-based): HF's eps placement.
  void before_step(int64_t step) {
    auto& groups = optimizer_.param_groups();
    for (size_t g = 0; g < groups.size(); ++g) {
      auto& o = static_cast<torch::optim::AdamWOptions&>(groups[g].options());
      const double beta2 = std::get<1>(o.betas());
      o.eps(eps_[g] / std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step))));
      o.weight_decay(0.0);  // a resumed optimizer may bring back its saved options
    }
  }
  /// After optimizer.step(): HF's p.add_(p, alpha=-lr * weight_decay).
  void after_step() {
    torch::NoGradGuard no_grad;
    auto& groups = optimizer_.param_groups();
    for (size_t g = 0; g < groups.size(); ++g) {
      if (weight_decay_[g] == 0.0) continue;
      const double lr = groups[g].options().get_lr();
      for (auto& p : groups[g].params())
        if (p.grad().defined()) p.add_(p, -lr * weight_decay_[g]);
    }
  }

 private:
  torch::optim::AdamW& optimizer_;
  std::vector<double> weight_decay_, eps_;
};

/// The rows of a tensor [N, L] (int64) as a JSON list of lists.
inline nlohmann::json rows_json(const torch::Tensor& t) {
  const auto c = t.contiguous().cpu();
  const auto a = c.accessor<int64_t, 2>();
  nlohmann::json out = nlohmann::json::array();
  for (int64_t i = 0; i < c.size(0); ++i) {
    std::vector<int64_t> row(c.size(1));
    for (int64_t j = 0; j < c.size(1); ++j) row[static_cast<size_t>(j)] = a[i][j];
    out.push_back(std::move(row));
  }
  return out;
}

}  // namespace detail

inline std::string state_path(const TrainSettings& settings, int64_t fold) {
  return (std::filesystem::path(settings.out_dir) / ("fold" + std::to_string(fold)) / "state.pt")
      .string();
}

namespace detail {

/// The settings a resumed run must share with the run that saved the state
/// (not the folder, device, fold selection, validation batch or state flags).
inline std::string settings_fingerprint(const TrainSettings& s) {
  std::ostringstream out;
  out.precision(17);
  auto opt = [](const auto& v) { return v ? std::to_string(*v) : std::string("unset"); };
  out << "data=" << s.data << " model=" << s.model_dir << " random_init=" << s.random_init
      << " llrd=" << llrd_name(s.llrd) << " lr_scale=" << s.lr_scale << " warmup=" << s.warmup_steps
      << " reinit=" << s.reinit_layers << " swa_lr=" << opt(s.swa_lr)
      << " swa_start_epoch=" << s.swa_start_epoch << " swa_anneal=" << s.swa_anneal_steps
      << " eval_every=" << opt(s.eval_every) << " eval_from=" << s.eval_every_from_epoch
      << " patience=" << s.patience << " folds=" << s.folds << " epochs=" << s.epochs
      << " batch=" << s.batch_size << " grad_accum=" << s.grad_accum
      << " max_length=" << s.max_length << " seed=" << s.seed
      << " standardize=" << s.standardize_target << " unfreeze=" << opt(s.unfreeze_every) << "/"
      << s.unfreeze_unit << " dropout=" << opt(s.dropout) << " notebook_exact=" << s.notebook_exact
      << " subsample=" << s.subsample;
  // fp32 runs keep the fingerprint they had before --precision existed (their
  // saved states still resume); any other precision is a different run.
  if (s.precision != "fp32") out << " precision=" << s.precision;
  return out.str();
}

/// The loop's own part of the state: this epoch's batch order and loss sum,
/// the lr log and the curve so far.
inline void save_loop(torch::serialize::OutputArchive& a, const torch::Tensor& order,
                      const torch::Tensor& loss_sum, const FoldResult& result) {
  if (order.defined()) a.write("order", order.cpu());
  a.write("loss_sum", loss_sum.cpu());
  const auto columns = static_cast<int64_t>(result.lr_columns.size());
  std::vector<double> lrs;
  for (const auto& row : result.lrs) lrs.insert(lrs.end(), row.begin(), row.end());
  a.write("lrs", torch::tensor(lrs, torch::kFloat64).reshape({-1, columns}));
  std::vector<double> curve;
  for (const auto& c : result.curve) {
    curve.insert(curve.end(), {static_cast<double>(c.epoch), static_cast<double>(c.batch),
                               static_cast<double>(c.step), c.train_rmse, c.val_rmse,
                               c.swa_val_rmse ? 1.0 : 0.0, c.swa_val_rmse.value_or(0.0)});
  }
  a.write("curve", torch::tensor(curve, torch::kFloat64).reshape({-1, 7}));
}

inline void load_loop(torch::serialize::InputArchive& a, torch::Tensor& order,
                      torch::Tensor& loss_sum, FoldResult& result, const torch::Device& device) {
  auto read = [&](const char* key) {
    torch::Tensor t;
    if (!a.try_read(key, t))
      throw std::invalid_argument(std::string("the loop has no '") + key + "'");
    return t;
  };
  const torch::Tensor lrs = read("lrs"), curve = read("curve"), sum = read("loss_sum");
  const auto columns = static_cast<int64_t>(result.lr_columns.size());
  if (lrs.dim() != 2 || lrs.size(1) != columns || lrs.scalar_type() != torch::kFloat64 ||
      curve.dim() != 2 || curve.size(1) != 7 || curve.scalar_type() != torch::kFloat64 ||
      sum.numel() != 1)
    throw std::invalid_argument("the loop's lr log, curve or loss sum has the wrong shape");
  torch::Tensor saved_order;
  if (a.try_read("order", saved_order)) order = saved_order.to(device);
  loss_sum.copy_(sum.reshape({}));
  result.lrs.clear();
  for (int64_t r = 0; r < lrs.size(0); ++r) {
    const double* row = lrs[r].contiguous().data_ptr<double>();
    result.lrs.emplace_back(row, row + columns);
  }
  result.curve.clear();
  const auto c = curve.accessor<double, 2>();
  for (int64_t r = 0; r < curve.size(0); ++r) {
    CurvePoint p{static_cast<int64_t>(c[r][0]),
                 static_cast<int64_t>(c[r][1]),
                 static_cast<int64_t>(c[r][2]),
                 c[r][3],
                 c[r][4],
                 std::nullopt};
    if (c[r][5] != 0.0) p.swa_val_rmse = c[r][6];
    result.curve.push_back(p);
  }
}

}  // namespace detail

inline FoldResult train_fold(const TrainSettings& s, const ModelFiles& files,
                             const EncodedDataset& data, int64_t fold,
                             const FoldCallbacks& callbacks, finetune::Distributed* dist) {
  namespace fs = std::filesystem;
  const auto started = std::chrono::steady_clock::now();
  // Data-parallel (torchrun): `dist` active. Only the writing rank writes files.
  const bool distributed = dist != nullptr && dist->active();
  const bool writer = !distributed || dist->is_writer();
  // Under torchrun with --device cuda: cuda:LOCAL_RANK (NCCL).
  const torch::Device device = distributed ? dist->device() : device_from_flag(s.device);
  if (s.epochs < 1 || s.batch_size < 1 || s.val_batch_size < 1)
    throw std::invalid_argument("--epochs and --batch-size must be at least 1");
  if (s.grad_accum < 1)
    throw std::invalid_argument("--grad-accum must be at least 1, got " +
                                std::to_string(s.grad_accum));
  if (s.unfreeze_every && *s.unfreeze_every < 1)
    throw std::invalid_argument("--unfreeze-every must be at least 1, got " +
                                std::to_string(*s.unfreeze_every));
  if (s.unfreeze_unit != "epochs" && s.unfreeze_unit != "steps")
    throw std::invalid_argument("--unfreeze-unit: expected epochs or steps, got '" +
                                s.unfreeze_unit + "'");
  if (s.save_state_every && *s.save_state_every < 0)
    throw std::invalid_argument("--save-state-every must be >= 0, got " +
                                std::to_string(*s.save_state_every));
  if (s.swa_lr && s.swa_start_epoch >= s.epochs)
    throw std::invalid_argument("--swa-start-epoch " + std::to_string(s.swa_start_epoch) +
                                " is not before --epochs " + std::to_string(s.epochs) +
                                " (epochs count from 0): SWA would never start");
  if (s.notebook_exact && (s.grad_accum != 1 || s.unfreeze_every))
    throw std::invalid_argument(
        "--notebook-exact: the notebook has no gradient accumulation and no gradual unfreezing "
        "(drop --grad-accum and --unfreeze-every)");
  const torch::Dtype amp_dtype = precision_dtype(s.precision);
  const bool low_precision = amp_dtype != torch::kFloat32;
  const bool fp16 = amp_dtype == torch::kFloat16;
  if (s.notebook_exact && low_precision)
    throw std::invalid_argument(
        "--notebook-exact runs the notebook's float32 loop: drop "
        "--precision " +
        s.precision + " (or use --precision fp32)");
  // Up front, not in the first epoch: fp16 on a CPU without float16 kernels,
  // bf16 where this LibTorch has no CPU bfloat16 autocast, cuda without a GPU.
  if (low_precision) {
    try {
      finetune::check_autocast_supported(device.type(), amp_dtype);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument("--precision " + s.precision + " --device " + s.device + ": " +
                                  e.what());
    }
  }
  if (!s.trace_dir.empty() && (s.resume || s.grad_accum != 1))
    throw std::invalid_argument(
        "--trace: records a whole run of one batch per step (not with --resume or --grad-accum)");
  if (s.eval_every && s.eval_every_from_epoch >= s.epochs)
    throw std::invalid_argument("--eval-every-from-epoch " +
                                std::to_string(s.eval_every_from_epoch) +
                                " is not before --epochs " + std::to_string(s.epochs) +
                                " (epochs count from 0): frequent evaluation would never start");

  FoldResult result;
  result.fold = fold;

  // --- the fold's rows ---------------------------------------------------------
  std::vector<int64_t> train_rows, val_rows;
  for (size_t i = 0; i < data.fold_of_row.size(); ++i)
    (data.fold_of_row[i] == fold ? val_rows : train_rows).push_back(static_cast<int64_t>(i));
  if (train_rows.empty() || val_rows.empty())
    throw std::invalid_argument("fold " + std::to_string(fold) +
                                " has no training or no validation rows");
  const auto take = [&](const torch::Tensor& t, const std::vector<int64_t>& rows) {
    return t.index_select(0, torch::tensor(rows, torch::kInt64)).to(device);
  };
  const auto train_ids = take(data.input_ids, train_rows);
  const auto train_mask = take(data.attention_mask, train_rows);
  const auto val_ids = take(data.input_ids, val_rows);
  const auto val_mask = take(data.attention_mask, val_rows);
  const auto val_target = take(data.targets, val_rows);
  const auto train_target_units = take(data.targets, train_rows);
  // The embedded data's target is a year: fit (y - mean) / std of the training rows.
  double mean = 0.0, scale = 1.0;
  if (data.standardize) {
    mean = train_target_units.mean().item<double>();
    scale = train_target_units.std(/*unbiased=*/false).item<double>();
    if (!(scale > 0.0)) scale = 1.0;
  }
  const auto train_target = ((train_target_units - mean) / scale).to(torch::kFloat32);
  const int64_t n_train = static_cast<int64_t>(train_rows.size());
  result.n_train = n_train;
  result.n_val = static_cast<int64_t>(val_rows.size());

  // --- model, as the notebook's run_training builds it ------------------------------
  torch::manual_seed(s.seed);  // set_random_seed(3377) at the start of every fold
  RobertaRegressor model = build_regressor(files, s.random_init, s.dropout);
  const int64_t num_layers = files.config.num_hidden_layers;
  if (s.reinit_layers > 0) {
    finetune::ReinitTopLayers(finetune::ReinitTopLayersOptions(s.reinit_layers)
                                  .initializer_range(files.config.initializer_range))(
        model->roberta->layers(), {{"pooler", model->roberta->pooler.ptr()}});
  }
  fs::path trace_dir;
  if (!s.trace_dir.empty() && writer) {
    trace_dir = fs::path(s.trace_dir) / ("fold" + std::to_string(fold));
    fs::create_directories(trace_dir);
    save_weights(*model, (trace_dir / "initial.safetensors").string());
  }
  model->to(device);
  model->train();
  // Every rank built the same model from the same seed; rank 0's parameters
  // and buffers make sure of it (random heads, re-initialized layers).
  if (distributed) dist->broadcast_module(*model);

  std::unique_ptr<finetune::SWAWrapper> swa;
  if (s.swa_lr) swa = std::make_unique<finetune::SWAWrapper>(*model);

  auto rates = article_rates(s.llrd, s.lr_scale).num_layers(num_layers);
  // The notebook's basic run: transformers.AdamW(model.parameters(), lr=1e-6), weight decay 0.
  if (s.notebook_exact && s.llrd == finetune::LLRDMode::none) rates.weight_decay(0.0);
  finetune::LayerwiseLRGroups<torch::optim::AdamWOptions> groups(
      *model, rates,
      // HF's AdamW in the notebook: eps 1e-6 (torch's default is 1e-8).
      torch::optim::AdamWOptions().eps(1e-6));
  // ATen's fused AdamW kernel (torch.optim.AdamW(fused=True)): the same
  // update in one pass per tensor; AdamW's own step on LibTorch 1.13.
  finetune::FusedAdamW optimizer(groups.param_groups(), torch::optim::AdamWOptions().eps(1e-6));
  groups.apply_to(optimizer);
  std::unique_ptr<detail::NotebookAdamW> hf_adamw;
  if (s.notebook_exact) hf_adamw = std::make_unique<detail::NotebookAdamW>(optimizer);
  const LayerLRProbe probe(groups, num_layers);
  result.lr_columns = probe.columns();

  // Gradual unfreezing: every block has its group already (built above, all
  // trainable); the blocks below the top are frozen from here on.
  std::unique_ptr<finetune::GradualUnfreezing> unfreezing;
  if (s.unfreeze_every) {
    std::vector<std::shared_ptr<torch::nn::Module>> blocks{model->roberta->embeddings.ptr()};
    for (const auto& layer : *model->roberta->layers()) blocks.push_back(layer);
    unfreezing = std::make_unique<finetune::GradualUnfreezing>(
        blocks, finetune::GradualUnfreezingOptions(*s.unfreeze_every)
                    .unit(s.unfreeze_unit == "steps" ? finetune::UnfreezeUnit::steps
                                                     : finetune::UnfreezeUnit::epochs));
  }

  // One optimizer step per K batches; the last step of an epoch may take fewer.
  const int64_t K = s.grad_accum;
  const int64_t batches = (n_train + s.batch_size - 1) / s.batch_size;  // last one partial
  const int64_t steps_per_epoch = (batches + K - 1) / K;
  // The notebook's count: int(len(df_train) / TRAIN_BS * EPOCHS), not a ceiling
  // (TRAIN_BS = batch size x K with accumulation).
  const auto total_steps =
      static_cast<int64_t>(static_cast<double>(n_train) / static_cast<double>(s.batch_size * K) *
                           static_cast<double>(s.epochs));
  if (total_steps < 1)
    throw std::invalid_argument("fold " + std::to_string(fold) + ": " + std::to_string(n_train) +
                                " training rows make no training step");
  // One scheduler for the loop: warm-up and linear decay, then (with SWA)
  // SWALR from the first optimizer step of the SWA start epoch.
  std::unique_ptr<finetune::Scheduler> scheduler = std::make_unique<finetune::WarmupLinearSchedule>(
      optimizer, finetune::WarmupLinearScheduleOptions(s.warmup_steps, total_steps));
  const finetune::SWAScheduler* swa_scheduler = nullptr;
  if (s.swa_lr) {
    auto composed = std::make_unique<finetune::SWAScheduler>(
        optimizer, std::move(scheduler),
        finetune::SWASchedulerOptions(
            s.swa_start_epoch * steps_per_epoch,
            finetune::SWALROptions(*s.swa_lr * s.lr_scale).anneal_epochs(s.swa_anneal_steps)));
    swa_scheduler = composed.get();
    scheduler = std::move(composed);
  }
  auto averaging = [swa_scheduler] { return swa_scheduler && swa_scheduler->averaging(); };

  // --- evaluation ---------------------------------------------------------------------
  const fs::path dir = fs::path(s.out_dir) / ("fold" + std::to_string(fold));
  if (writer) {
    fs::create_directories(dir);
    files.config.save((dir / "config.json").string());
  }
  result.checkpoint_dir = dir.string();
  auto evaluator_options =
      finetune::PeriodicEvaluatorOptions(dir.string())
          .eval_every(s.eval_every.value_or(1))
          // Without --eval-every: once per epoch, at its end (the notebook's train_fn).
          .eval_every_from_epoch(s.eval_every ? s.eval_every_from_epoch : s.epochs)
          .patience(s.patience)
          .checkpoint_name("best.safetensors")
          .averaged_checkpoint_name("best_swa.safetensors")
          .log_prefix("fold " + std::to_string(fold) + ", ");
  // The other ranks take the same decisions (the metric is rank 0's on every
  // rank) but write nothing.
  if (!writer) evaluator_options.writer(false);
  finetune::PeriodicEvaluator evaluator(
      evaluator_options, [&model](const std::string& path) { save_weights(*model, path); },
      callbacks.log ? finetune::PeriodicEvaluator::LogFn(callbacks.log)
                    : finetune::PeriodicEvaluator::stdout_logger());
  // --precision bf16/fp16: every forward pass under autocast (none in fp32).
  auto autocast = [&](std::optional<finetune::compat::AutocastGuard>& guard) {
    if (low_precision) guard.emplace(device.type(), amp_dtype);
  };
  auto evaluate = [&] {
    std::optional<finetune::compat::AutocastGuard> guard;
    autocast(guard);
    if (distributed)
      return detail::sharded_validation_rmse(model, val_ids, val_mask, val_target, s.val_batch_size,
                                             mean, scale,
                                             /*mean_of_batches=*/s.notebook_exact, *dist);
    return detail::validation_rmse(model, val_ids, val_mask, val_target, s.val_batch_size, mean,
                                   scale, /*mean_of_batches=*/s.notebook_exact);
  };
  double last_averaged_rmse = std::nan("");
  auto evaluate_averaged = [&] {
    auto averaged = swa->swap_in(*model);
    last_averaged_rmse = evaluate();
    return last_averaged_rmse;
  };
  auto save_averaged = [&](const std::string& path) {
    auto averaged = swa->swap_in(*model);
    save_weights(*model, path);
  };

  // --- the run's state: everything a resumed process needs --------------------------
  auto shuffle = at::detail::createCPUGenerator(s.seed);
  torch::Tensor order;                                                // this epoch's batch order
  torch::Tensor loss_sum = torch::zeros({}, train_target.options());  // this epoch's batch losses
  // --precision fp16: dynamic loss scaling (off otherwise: scale() returns the
  // loss). A part of the state only then, so fp32 states keep their parts.
  finetune::GradScaler scaler(finetune::GradScalerOptions().enabled(fp16));
  finetune::TrainingState state;
  state.add("model", *model).add("optimizer", optimizer).add("scheduler", *scheduler);
  state.add("evaluator", evaluator).add("shuffle", shuffle);
  if (fp16) state.add("scaler", scaler);
  if (swa) state.add("swa", *swa, *model, averaging);
  if (unfreezing) state.add("unfreezing", *unfreezing);
  const std::string settings = detail::settings_fingerprint(s);
  state.add(
      "settings",
      [&settings](torch::serialize::OutputArchive& a) { a.write("json", c10::IValue(settings)); },
      [&settings](torch::serialize::InputArchive& a) {
        c10::IValue saved;
        if (!a.try_read("json", saved) || !saved.isString())
          throw std::invalid_argument("the state has no settings");
        if (saved.toStringRef() != settings)
          throw std::invalid_argument(
              "the state was saved by a run with other settings; resume with the same flags.\n"
              "Saved: " +
              saved.toStringRef() + "\nNow:   " + settings);
      });
  state.add(
      "loop",
      [&](torch::serialize::OutputArchive& a) { detail::save_loop(a, order, loss_sum, result); },
      [&](torch::serialize::InputArchive& a) {
        detail::load_loop(a, order, loss_sum, result, device);
      });
  const std::string state_file = state_path(s, fold);
  if (s.resume && finetune::TrainingState::exists(state_file)) {
    state.load(state_file);
    result.resumed = true;
  }
  const bool keep_state = s.save_state_every.has_value() || s.resume;
  const int64_t save_every = s.save_state_every.value_or(0);

  // --- the loop -------------------------------------------------------------------------
  auto& pos = state.position();
  torch::Tensor step_mse = torch::zeros({}, train_target.options());  // accumulated, K > 1
  auto curve_point = [&](const finetune::EvaluationRecord& r) {
    CurvePoint point{r.epoch,  r.batch,
                     r.step,   loss_sum.item<double>() / static_cast<double>(pos.batch) * scale,
                     r.metric, std::nullopt};
    if (averaging()) point.swa_val_rmse = last_averaged_rmse;
    result.curve.push_back(point);
  };
  // --trace: each epoch's order and each batch's loss, read at the end.
  std::vector<torch::Tensor> trace_orders, trace_losses;
  // Data-parallel: this step's batches' squared-error sums on this rank's rows.
  std::vector<torch::Tensor> shard_squared;
  // --check-replicas: the weights (and the SWA average) are the same on every rank.
  auto check_replicas = [&](const char* where) {
    if (!distributed || !s.check_replicas) return;
    std::vector<torch::Tensor> tensors;
    for (const auto& p : model->parameters()) tensors.push_back(p.detach());
    if (swa)
      for (const auto& named : swa->named_averages()) tensors.push_back(named.second);
    if (!dist->identical(tensors))
      throw std::runtime_error("--check-replicas: the weights" +
                               std::string(swa ? " or the SWA average" : "") +
                               " differ between ranks after optimizer step " +
                               std::to_string(pos.optimizer_step) + " (" + where + ")");
  };
  bool stop = evaluator.should_stop();
  while (pos.epoch < s.epochs && !stop) {
    if (pos.batch == 0) {
      order = torch::randperm(n_train, shuffle, torch::kInt64).to(device);
      loss_sum.zero_();
      if (!trace_dir.empty()) trace_orders.push_back(order);
    }
    while (pos.batch < batches && !stop) {
      const int64_t i = pos.batch;
      const int64_t first = i / K * K, end = std::min(batches, first + K);  // this step's batches
      const auto rows = order.slice(0, i * s.batch_size, std::min(n_train, (i + 1) * s.batch_size));
      if (distributed) {
        // This rank's rows of the global batch. The loss the ranks' gradients
        // sum to is the single process's: the step's squared errors over its
        // rows (all ranks) divided by their count, scaled by d sqrt(M)/dM at
        // the step's end, as with --grad-accum.
        const double step_rows =
            static_cast<double>(std::min(n_train, end * s.batch_size) - first * s.batch_size);
        const auto [shard_begin, shard_end] =
            finetune::shard_range(rows.numel(), dist->rank(), dist->world_size());
        if (shard_end > shard_begin) {
          const auto mine = rows.slice(0, shard_begin, shard_end);
          torch::Tensor squared;
          {
            std::optional<finetune::compat::AutocastGuard> guard;
            autocast(guard);
            const auto prediction =
                model->forward(train_ids.index_select(0, mine), train_mask.index_select(0, mine))
                    .to(torch::kFloat32);
            squared = (prediction - train_target.index_select(0, mine)).square().sum();
          }
          scaler.scale(squared / step_rows).backward();
          shard_squared.push_back(squared.detach());
        } else {  // no rows here (a small last batch): zero gradients, still reduced
          shard_squared.push_back(torch::zeros({}, train_target.options()));
        }
        state.next_batch();
        if (pos.batch != end) continue;
        // The step's batches: squared-error sums over all ranks, gradients summed.
        const auto squared =
            dist->all_reduce_sum(torch::stack(shard_squared)).to(train_target.dtype());
        shard_squared.clear();
        std::vector<torch::Tensor> trainable;
        for (const auto& p : model->parameters())
          if (p.requires_grad()) trainable.push_back(p);
        dist->all_reduce_gradients(trainable, 1.0);
        // fp16: the summed gradients, unscaled (the same inf/NaN verdict on
        // every rank), before the sqrt-MSE factor.
        if (fp16) scaler.unscale_(optimizer);
        const auto factor = 0.5 / torch::sqrt(squared.sum() / step_rows);
        {
          torch::NoGradGuard no_grad;
          for (auto& p : trainable)
            if (p.grad().defined()) p.mutable_grad().mul_(factor);
        }
        for (int64_t b = first; b < end; ++b) {  // each batch's loss: sqrt(its MSE)
          const auto batch_rows =
              static_cast<double>(std::min(n_train, (b + 1) * s.batch_size) - b * s.batch_size);
          const auto loss = torch::sqrt(squared[b - first] / batch_rows);
          loss_sum += loss;
          if (!trace_dir.empty()) trace_losses.push_back(loss);
        }
      } else {
        torch::Tensor prediction;
        {
          std::optional<finetune::compat::AutocastGuard> guard;
          autocast(guard);
          prediction =
              model->forward(train_ids.index_select(0, rows), train_mask.index_select(0, rows));
          if (low_precision) prediction = prediction.to(torch::kFloat32);
        }
        const auto target = train_target.index_select(0, rows);
        if (K == 1) {
          const auto loss = torch::sqrt(torch::mse_loss(prediction, target));
          scaler.scale(loss).backward();
          loss_sum += loss.detach();
          if (!trace_dir.empty()) trace_losses.push_back(loss.detach());
        } else {
          // The notebook's loss is sqrt(MSE) of the whole step's rows, not a sum
          // over its batches: accumulate the MSE's gradient, then scale it by
          // d sqrt(M)/dM = 1 / (2 sqrt(M)) once M is known (below).
          const double step_rows =
              static_cast<double>(std::min(n_train, end * s.batch_size) - first * s.batch_size);
          const auto squared = (prediction - target).square().sum();
          scaler.scale(squared / step_rows).backward();
          step_mse += squared.detach() / step_rows;
          loss_sum += torch::sqrt(squared.detach() / static_cast<double>(rows.numel()));
        }
        state.next_batch();
        if (pos.batch != end) continue;
        if (K > 1) {
          if (fp16) scaler.unscale_(optimizer);  // the true gradients, before the factor
          const auto factor = 0.5 / torch::sqrt(step_mse);
          torch::NoGradGuard no_grad;
          for (auto& p : model->parameters())
            if (p.grad().defined()) p.mutable_grad().mul_(factor);
          step_mse.zero_();
        }
      }
      const auto lrs = probe.read(optimizer);  // the rates this step trains with
      if (hf_adamw) hf_adamw->before_step(pos.optimizer_step + 1);
      if (callbacks.before_step)
        callbacks.before_step(pos.optimizer_step + pos.skipped_steps + 1, *model);
      bool taken = true;
      if (fp16) {
        taken = scaler.step(optimizer);  // an inf/NaN gradient: no step
        scaler.update();
      } else {
        optimizer.step();
      }
      if (hf_adamw) hf_adamw->after_step();
      optimizer.zero_grad();
      // A skipped step is no step: no lr row, no schedule, average,
      // unfreezing or evaluation, no state save.
      if (state.optimizer_step(taken)) {  // scheduler, SWA average, unfreezing
        result.lrs.push_back(lrs);
        const bool swa_step = averaging();
        if (callbacks.after_step) callbacks.after_step(pos.optimizer_step, swa_step, *model);
        if (swa_step) check_replicas("averaged step");
        stop = swa_step ? evaluator.step(evaluate, evaluate_averaged, save_averaged)
                        : evaluator.step(evaluate);
        if (evaluator.evaluated_last_step()) {
          curve_point(evaluator.last_evaluation());
          check_replicas("evaluation");
        }
        if (save_every > 0 && pos.optimizer_step % save_every == 0 && writer)
          state.save(state_file);
      }
      if (callbacks.progress) callbacks.progress(pos.optimizer_step, steps_per_epoch * s.epochs);
      // Ctrl-C reaches the ranks at different steps: all stop at the first.
      if (distributed ? dist->any(interrupt_requested().load()) : interrupt_requested().load()) {
        result.interrupted = true;
        stop = true;
      }
    }
    if (stop) break;  // early stopping or Ctrl-C inside the epoch
    // The epoch's data ran out: its last evaluation unless its last step had one.
    stop = averaging() ? evaluator.end_epoch(evaluate, evaluate_averaged, save_averaged)
                       : evaluator.end_epoch(evaluate);
    if (evaluator.evaluated_last_step()) {
      curve_point(evaluator.last_evaluation());
      check_replicas("evaluation");
    }
    state.end_epoch();
  }
  if (keep_state && writer) state.save(state_file);  // Ctrl-C or the fold's end: resumable
  result.early_stopped = evaluator.should_stop();
  result.steps = pos.optimizer_step;
  result.skipped_steps = pos.skipped_steps;
  result.evaluations = evaluator.num_evaluations();
  result.best_rmse = evaluator.best();
  if (swa && swa->n_averaged() > 0) {
    result.best_swa_rmse = evaluator.best_averaged();
    // The notebook's last call: update_bn(train_data_loader, swa_model). RoBERTa
    // has no BatchNorm, so this is a no-op kept for models that do.
    auto averaged = swa->swap_in(*model);
    finetune::update_bn(*model, [&] {
      torch::NoGradGuard no_grad;
      for (int64_t start = 0; start < n_train; start += s.batch_size)
        model->forward(train_ids.slice(0, start, std::min(n_train, start + s.batch_size)),
                       train_mask.slice(0, start, std::min(n_train, start + s.batch_size)));
    });
  }
  if (!trace_dir.empty()) {
    nlohmann::json evaluations = nlohmann::json::array();
    for (const auto& c : result.curve)
      evaluations.push_back({{"epoch", c.epoch},
                             {"batch", c.batch},
                             {"step", c.step},
                             {"rmse", c.val_rmse},
                             {"swa_rmse", c.swa_val_rmse ? nlohmann::json(*c.swa_val_rmse)
                                                         : nlohmann::json(nullptr)}});
    nlohmann::json orders = nlohmann::json::array();
    for (const auto& o : trace_orders) {
      const auto c = o.cpu().contiguous();
      orders.push_back(
          std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()));
    }
    std::vector<double> losses;
    if (!trace_losses.empty()) {
      const auto all = torch::stack(trace_losses).to(torch::kCPU, torch::kFloat64).contiguous();
      losses.assign(all.data_ptr<double>(), all.data_ptr<double>() + all.numel());
    }
    const nlohmann::json trace = {
        {"fold", fold},
        {"data", s.data},
        {"subsample", s.subsample},
        {"model", files.dir},
        {"settings", detail::settings_fingerprint(s)},
        {"llrd", llrd_name(s.llrd)},
        {"lr_scale", s.lr_scale},
        {"warmup_steps", s.warmup_steps},
        {"reinit_layers", s.reinit_layers},
        {"swa_lr", s.swa_lr ? nlohmann::json(*s.swa_lr) : nlohmann::json(nullptr)},
        {"swa_start_epoch", s.swa_start_epoch},
        {"swa_anneal_steps", s.swa_anneal_steps},
        {"eval_every", s.eval_every ? nlohmann::json(*s.eval_every) : nlohmann::json(nullptr)},
        {"eval_every_from_epoch", s.eval_every_from_epoch},
        {"patience", s.patience},
        {"epochs", s.epochs},
        {"batch_size", s.batch_size},
        {"val_batch_size", s.val_batch_size},
        {"max_length", s.max_length},
        {"dropout", s.dropout ? nlohmann::json(*s.dropout) : nlohmann::json(nullptr)},
        {"notebook_exact", s.notebook_exact},
        {"target_mean", mean},
        {"target_scale", scale},
        {"train_rows", train_rows},
        {"val_rows", val_rows},
        {"input_ids", detail::rows_json(data.input_ids)},
        {"attention_mask", detail::rows_json(data.attention_mask)},
        {"targets", std::vector<double>(data.targets.data_ptr<double>(),
                                        data.targets.data_ptr<double>() + data.targets.numel())},
        {"orders", orders},
        {"losses", losses},
        {"evaluations", evaluations},
        {"steps", result.steps},
        {"early_stopped", result.early_stopped}};
    finetune::atomic_write_text((trace_dir / "trace.json").string(), trace.dump() + "\n");
  }
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

}  // namespace roberta_regression
