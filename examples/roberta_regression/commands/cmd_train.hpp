// `roberta_regression train` (one configuration, every fold) and
// `roberta_regression table` (the article's ladder of techniques), plus
// run_table(), which `demo` calls with the embedded data's settings.
#pragma once

#include <fmt/core.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <finetune/periodic_evaluator.hpp>

#include "roberta_paths.hpp"
#include "training/plot.hpp"
#include "training/progress.hpp"
#include "training/trainer.hpp"

namespace roberta_regression {

/// Thrown when Ctrl-C stopped a run; main() exits with 130.
struct Interrupted : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Options of `table` beyond TrainSettings: the values its rows switch on.
struct LadderSettings {
  int64_t warmup_steps = 50;
  int64_t reinit_layers = 5;
  double swa_lr = 2e-6;
  int64_t eval_every = 10;
  bool with_random_init = false;  ///< add "basic fine-tuning" from a randomly initialized model
  std::vector<int64_t> rows;      ///< 1-based row numbers to run; empty: all
  std::string json;               ///< where to write the table as JSON ("" = <out>/table.json)
  std::string plot_dir;           ///< figures of every row's folds ("" = none)
};

/// One row of the ladder: its name and the settings it trains with.
struct LadderRow {
  std::string technique;
  TrainSettings settings;
};

/// The article's ladder, each row adding one technique to the one above
/// (grouped LLRD replaces layer-wise LLRD).
std::vector<LadderRow> article_ladder(const TrainSettings& base, const LadderSettings& ladder);

struct TableRowResult {
  int64_t number = 0;  ///< 1-based row of the ladder
  std::string technique, rates;
  std::vector<FoldResult> folds;
  double seconds = 0.0;
};

struct TableResult {
  std::string header;
  std::vector<TableRowResult> rows;
};

/// Runs the ladder's rows (all folds of each), printing one line per fold and
/// the Markdown table at the end; writes the table as Markdown (<json>.md) and
/// JSON. Throws Interrupted after Ctrl-C (what finished is written first).
TableResult run_table(const TrainSettings& base, const LadderSettings& ladder);

std::string markdown_table(const TableResult& table);
nlohmann::json table_json(const TableResult& table, const TrainSettings& base);

/// Writes table_json() to `json_path` and markdown_table() beside it
/// (`.md`), each with finetune::atomic_write_text: a kill leaves each file
/// old or new, a full disk throws std::runtime_error naming the file.
void write_table_files(const std::string& json_path, const TableResult& table,
                       const TrainSettings& base);
/// Writes `train`'s summary as indented JSON to `path` (atomic_write_text).
void write_results_json(const std::string& path, const nlohmann::json& summary);

void add_train_commands(CLI::App& app);

// ---------------------------------------------------------------------------
// Implementation
// ---------------------------------------------------------------------------

namespace detail {

/// Stop after the current step on Ctrl-C; a second Ctrl-C kills at once.
inline void install_interrupt_handler() {
  interrupt_requested() = false;
  std::signal(SIGINT, [](int) {
    interrupt_requested() = true;
    std::signal(SIGINT, SIG_DFL);
  });
}

inline std::vector<int64_t> folds_to_run(const TrainSettings& s) {
  if (s.fold) return {*s.fold};
  std::vector<int64_t> all;
  for (int64_t f = 0; f < s.folds; ++f) all.push_back(f);
  return all;
}

inline std::string data_summary(const TrainSettings& s, const EncodedDataset& d,
                                const ModelFiles& m, bool random_init) {
  return fmt::format(
      "{}: {} rows{}{}, {} folds{}, target {}; model {} ({} layers, hidden {}{}); {} epochs, batch "
      "{}, "
      "max length {}, seed {}; {}{} ({} threads), LibTorch {}{}",
      s.data, d.targets.size(0), s.subsample > 1 ? fmt::format(" (1 in {})", s.subsample) : "",
      d.dropped ? fmt::format(" ({} dropped: target 0, standard_error 0)", d.dropped) : "", s.folds,
      d.grouped ? " grouped by address" : "",
      d.standardize ? "standardized for training, RMSE in target units" : "as is", m.dir,
      m.config.num_hidden_layers, m.config.hidden_size, random_init ? ", random init" : "",
      s.epochs, s.batch_size, s.max_length, s.seed, s.device,
      s.precision == "fp32" ? std::string() : ", " + s.precision + " autocast",
      torch::get_num_threads(), TORCH_VERSION,
      s.device == "cpu" ? fmt::format(", linear layers by {}", to_string(dense_backend())) : "");
}

/// Runs the folds of one configuration; `line` receives the per-fold summary.
/// With an active `dist` (torchrun), the other ranks than rank 0 print
/// nothing (but with --log-all-ranks, their lines prefixed "rank <r>: ").
inline std::vector<FoldResult> run_folds(const TrainSettings& s, const ModelFiles& files,
                                         const EncodedDataset& data, bool print_evaluations,
                                         const std::string& label, std::ofstream* lr_log,
                                         finetune::Distributed* dist = nullptr) {
  const bool other_rank = dist != nullptr && dist->active() && !dist->is_writer();
  const std::string rank_prefix =
      other_rank ? fmt::format("rank {}: ", dist->rank()) : std::string();
  const bool silent = other_rank && !s.log_all_ranks;
  ProgressBar bar;
  std::vector<FoldResult> results;
  const auto folds = folds_to_run(s);
  for (int64_t fold : folds) {
    if (!other_rank) bar.start(fmt::format("{}fold {}", label, fold));
    FoldCallbacks callbacks;
    // The evaluator's lines go to the terminal (train) or to the fold's log file (table).
    std::shared_ptr<std::ofstream> eval_log;
    if (other_rank) {
      callbacks.log = [silent, rank_prefix](const std::string& line) {
        if (silent) return;
        fmt::print("{}{}\n", rank_prefix, line);
        std::fflush(stdout);
      };
    } else if (print_evaluations) {
      callbacks.log = [&bar](const std::string& line) {
        bar.clear();
        fmt::print("{}\n", line);
        std::fflush(stdout);
      };
    } else {
      const auto dir = std::filesystem::path(s.out_dir) / ("fold" + std::to_string(fold));
      std::filesystem::create_directories(dir);
      eval_log = std::make_shared<std::ofstream>((dir / "evaluations.log").string());
      callbacks.log = [eval_log](const std::string& line) { *eval_log << line << '\n'; };
    }
    if (!other_rank)
      callbacks.progress = [&bar](int64_t done, int64_t total) { bar.update(done, total); };
    FoldResult r = train_fold(s, files, data, fold, callbacks, dist);
    bar.clear();
    if (lr_log && lr_log->is_open() && !other_rank) {
      write_lr_csv_rows(*lr_log, r, /*with_fold=*/folds.size() > 1);
      lr_log->flush();
    }
    if (other_rank && !silent) {  // --log-all-ranks: this rank's decisions, every digit
      fmt::print("{}{}fold {}: best RMSE {:.17g}, SWA weights {}, {} steps, {} evaluations{}\n",
                 rank_prefix, label, fold, r.best_rmse,
                 r.best_swa_rmse ? fmt::format("{:.17g}", *r.best_swa_rmse) : "none", r.steps,
                 r.evaluations, r.early_stopped ? ", early stop" : "");
      std::fflush(stdout);
    } else if (!other_rank) {
      fmt::print("{}fold {}: best RMSE {:.4f}{}, {} steps{}, {} evaluations{}, {:.0f} s\n", label,
                 fold, r.best_rmse,
                 r.best_swa_rmse ? fmt::format(" (SWA weights {:.4f})", *r.best_swa_rmse) : "",
                 r.steps,
                 s.precision == "fp16"
                     ? fmt::format(" ({} skipped: inf/NaN fp16 gradients)", r.skipped_steps)
                     : std::string(),
                 r.evaluations, r.early_stopped ? ", early stop" : "", r.seconds);
      std::fflush(stdout);
    }
    results.push_back(std::move(r));
    if (results.back().interrupted) break;
  }
  return results;
}

inline std::string plot_title(const std::string& text) {
  std::string t = text;
  for (char& c : t)
    if (c == '\'' || c == '\\') c = ' ';
  return t;
}

inline void plot_results(const std::string& dir, const std::string& title,
                         const std::vector<FoldResult>& results) {
  if (dir.empty()) return;
  const bool draw = gnuplot_available();
  if (!draw) {
    fmt::print(
        "--plot: gnuplot is not installed (apt-get install gnuplot-nox); wrote the CSV "
        "files and gnuplot scripts to {} only\n",
        dir);
  }
  for (const auto& r : results)
    for (const auto& png : plot_fold(dir, plot_title(title), r, draw))
      fmt::print("plot: {}\n", png);
}

inline nlohmann::json fold_json(const FoldResult& r) {
  nlohmann::json j = {{"fold", r.fold},
                      {"n_train", r.n_train},
                      {"n_val", r.n_val},
                      {"best_rmse", r.best_rmse},
                      {"steps", r.steps},
                      {"evaluations", r.evaluations},
                      {"early_stopped", r.early_stopped},
                      {"interrupted", r.interrupted},
                      {"seconds", r.seconds},
                      {"checkpoint_dir", r.checkpoint_dir},
                      {"skipped_steps", r.skipped_steps}};
  j["best_swa_rmse"] = r.best_swa_rmse ? nlohmann::json(*r.best_swa_rmse) : nlohmann::json(nullptr);
  return j;
}

/// One configuration's scores: every fold's best RMSE, the averaged (SWA)
/// weights' where they ran, and each fold as JSON.
struct FoldScores {
  std::vector<double> best, swa;
  nlohmann::json folds = nlohmann::json::array();
};

inline FoldScores fold_scores(const std::vector<FoldResult>& results) {
  FoldScores scores;
  for (const auto& r : results) {
    scores.best.push_back(r.best_rmse);
    if (r.best_swa_rmse) scores.swa.push_back(*r.best_swa_rmse);
    scores.folds.push_back(fold_json(r));
  }
  return scores;
}

/// Options shared by train and table (the experiment's, not the techniques').
inline void add_experiment_options(CLI::App* cmd, TrainSettings& s) {
  cmd->add_option("--data", s.data, "CommonLit-shaped CSV (.csv or .csv.gz)")
      ->capture_default_str();
  cmd->add_option("--model", s.model_dir,
                  "Hugging Face folder: config.json, model.safetensors, vocab.json, merges.txt")
      ->capture_default_str();
  cmd->add_option("--out", s.out_dir, "folder of checkpoints, histories and results")
      ->capture_default_str();
  cmd->add_option("--folds", s.folds, "number of folds")
      ->capture_default_str()
      ->check(CLI::Range(2, 100));
  cmd->add_option("--fold", s.fold, "run only this fold (0-based); default all");
  cmd->add_option("--epochs", s.epochs)->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--batch-size", s.batch_size, "training batch size")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--val-batch-size", s.val_batch_size)
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-length", s.max_length, "tokens per excerpt, <s> and </s> included")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{2}, int64_t{1 << 20}));
  cmd->add_option("--seed", s.seed, "folds, initialization, dropout and shuffling")
      ->capture_default_str();
  cmd->add_option("--device", s.device)
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--lr-scale", s.lr_scale, "multiplies every learning rate, swa_lr included")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--swa-start-epoch", s.swa_start_epoch, "first SWA epoch (0-based)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--swa-anneal-steps", s.swa_anneal_steps, "SWALR's anneal_epochs, in steps")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--eval-every-from-epoch", s.eval_every_from_epoch,
                  "first epoch (0-based) evaluated every --eval-every batches")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--patience", s.patience, "early stopping: evaluations without improvement")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--standardize-target", s.standardize_target,
                  "auto: when the CSV has an address column (the embedded data)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "on", "off"}));
  cmd->add_option("--subsample", s.subsample,
                  "use only every N-th row of the CSV (a smaller run of the same data)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--dropout", s.dropout,
                  "dropout probability of every layer (default: config.json's)")
      ->check(CLI::Range(0.0, 0.999999));
  cmd->add_option("--precision", s.precision,
                  "fp32, or autocast with float32 master weights: bf16, fp16 (with loss scaling; "
                  "skipped steps are counted)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  cmd->add_flag("--notebook-exact", s.notebook_exact,
                "the notebook's exact loop: validation RMSE as the mean of per-batch RMSEs, no "
                "weight decay without LLRD, transformers.AdamW's update (decay after the step)");
  cmd->add_option("--trace", s.trace_dir,
                  "write <DIR>/fold<k>/: initial weights (initial.safetensors) and trace.json "
                  "(rows, batch orders, every step's loss, every evaluation)");
}

}  // namespace detail

inline std::vector<LadderRow> article_ladder(const TrainSettings& base, const LadderSettings& l) {
  std::vector<LadderRow> rows;
  TrainSettings s = base;
  s.llrd = finetune::LLRDMode::none;
  s.warmup_steps = 0;
  s.reinit_layers = 0;
  s.swa_lr.reset();
  s.eval_every.reset();
  s.random_init = false;
  rows.push_back({"basic fine-tuning", s});
  s.llrd = finetune::LLRDMode::layerwise;
  rows.push_back({"+ layer-wise LLRD", s});
  s.llrd = finetune::LLRDMode::grouped;
  rows.push_back({"grouped LLRD instead", s});
  s.warmup_steps = l.warmup_steps;
  rows.push_back({fmt::format("+ {} warm-up steps", l.warmup_steps), s});
  s.reinit_layers = l.reinit_layers;
  rows.push_back({fmt::format("+ re-init {} layers", l.reinit_layers), s});
  s.swa_lr = l.swa_lr;
  rows.push_back({fmt::format("+ SWA (swa_lr {:g})", l.swa_lr * base.lr_scale), s});
  s.eval_every = l.eval_every;
  rows.push_back({fmt::format("+ frequent evaluation (every {} batches)", l.eval_every), s});
  if (l.with_random_init) {
    TrainSettings r = rows.front().settings;
    r.random_init = true;
    rows.push_back({"basic fine-tuning, random init (no pretraining)", r});
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    rows[i].settings.out_dir =
        (std::filesystem::path(base.out_dir) / fmt::format("row{}", i + 1)).string();
    if (!base.trace_dir.empty())
      rows[i].settings.trace_dir =
          (std::filesystem::path(base.trace_dir) / fmt::format("row{}", i + 1)).string();
  }
  return rows;
}

inline std::string markdown_table(const TableResult& t) {
  if (t.rows.empty()) return t.header + "\n(no rows)\n";
  std::ostringstream out;
  out << t.header << "\n\n| # | technique |";
  std::vector<int64_t> folds;
  for (const auto& r : t.rows.front().folds) folds.push_back(r.fold);
  for (int64_t f : folds) out << " fold " << f << " |";
  out << " mean ± std | SWA weights, mean | time |\n|---|---|";
  for (size_t i = 0; i < folds.size(); ++i) out << "---:|";
  out << "---:|---:|---:|\n";
  for (size_t i = 0; i < t.rows.size(); ++i) {
    const auto& row = t.rows[i];
    const auto scores = detail::fold_scores(row.folds);
    out << "| " << row.number << " | " << row.technique << " |";
    for (size_t k = 0; k < folds.size(); ++k)
      out << (k < row.folds.size() ? fmt::format(" {:.4f} |", row.folds[k].best_rmse) : " - |");
    out << fmt::format(" {:.4f} ± {:.4f} |", mean_of(scores.best), std_of(scores.best));
    out << (scores.swa.empty() ? std::string(" - |")
                               : fmt::format(" {:.4f} |", mean_of(scores.swa)));
    out << fmt::format(" {:.0f} s |\n", row.seconds);
  }
  out << "\nLearning rates:\n";
  for (size_t i = 0; i < t.rows.size(); ++i)
    out << "- " << t.rows[i].number << ". " << t.rows[i].technique << ": " << t.rows[i].rates
        << '\n';
  return out.str();
}

inline nlohmann::json table_json(const TableResult& t, const TrainSettings& base) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : t.rows) {
    const auto scores = detail::fold_scores(row.folds);
    const auto& swa = scores.swa;
    rows.push_back(
        {{"row", row.number},
         {"technique", row.technique},
         {"rates", row.rates},
         {"fold_rmse", scores.best},
         {"mean", mean_of(scores.best)},
         {"std", std_of(scores.best)},
         {"swa_rmse", swa},
         {"swa_mean", swa.empty() ? nlohmann::json(nullptr) : nlohmann::json(mean_of(swa))},
         {"seconds", row.seconds},
         {"folds", scores.folds}});
  }
  return {{"header", t.header},
          {"data", base.data},
          {"subsample", base.subsample},
          {"model", base.model_dir},
          {"folds", base.folds},
          {"epochs", base.epochs},
          {"batch_size", base.batch_size},
          {"max_length", base.max_length},
          {"lr_scale", base.lr_scale},
          {"precision", base.precision},
          {"seed", base.seed},
          {"libtorch", TORCH_VERSION},
          {"threads", torch::get_num_threads()},
          {"linear_layers", to_string(dense_backend())},
          {"rows", rows}};
}

inline void write_table_files(const std::string& json_path, const TableResult& table,
                              const TrainSettings& base) {
  finetune::atomic_write_text(json_path, table_json(table, base).dump(2) + "\n");
  finetune::atomic_write_text(std::filesystem::path(json_path).replace_extension(".md").string(),
                              markdown_table(table));
}

inline void write_results_json(const std::string& path, const nlohmann::json& summary) {
  finetune::atomic_write_text(path, summary.dump(2) + "\n");
}

inline TableResult run_table(const TrainSettings& base, const LadderSettings& ladder) {
  namespace fs = std::filesystem;
  // The ladder runs single-process (docs/distributed_example.md).
  for (const char* name : {"RANK", "WORLD_SIZE"})
    if (std::getenv(name))
      throw std::invalid_argument(
          std::string(name) +
          " is set (launched by torchrun?): table and demo run single-process; "
          "run `train` under torchrun for data-parallel training");
  const ModelFiles files = load_model_files(base.model_dir, base.max_length);
  const EncodedDataset data = load_dataset(base, *files.tokenizer);
  auto rows = article_ladder(base, ladder);
  for (int64_t r : ladder.rows)
    if (r < 1 || r > static_cast<int64_t>(rows.size()))
      throw std::invalid_argument(fmt::format("--rows: {} is not a row (1 to {})", r, rows.size()));

  TableResult table;
  table.header = fmt::format("RoBERTa regression, the article's techniques: {}",
                             detail::data_summary(base, data, files, false));
  fmt::print("{}\n", table.header);
  fs::create_directories(base.out_dir);
  const std::string json_path =
      ladder.json.empty() ? (fs::path(base.out_dir) / "table.json").string() : ladder.json;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!ladder.rows.empty() && std::find(ladder.rows.begin(), ladder.rows.end(),
                                          static_cast<int64_t>(i + 1)) == ladder.rows.end())
      continue;
    const auto& row = rows[i];
    TableRowResult result;
    result.number = static_cast<int64_t>(i + 1);
    result.technique = row.technique;
    result.rates = describe_rates(row.settings.llrd, row.settings.lr_scale, row.settings.swa_lr);
    const std::string label = fmt::format("row {} ({}), ", i + 1, row.technique);
    const auto started = std::chrono::steady_clock::now();
    result.folds =
        detail::run_folds(row.settings, files, data, /*print_evaluations=*/false, label, nullptr);
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (!ladder.plot_dir.empty())
      detail::plot_results((fs::path(ladder.plot_dir) / fmt::format("row{}", i + 1)).string(),
                           row.technique, result.folds);
    const bool interrupted = !result.folds.empty() && result.folds.back().interrupted;
    table.rows.push_back(std::move(result));
    write_table_files(json_path, table, base);
    if (interrupted)
      throw Interrupted("interrupted: the table so far is in " + json_path +
                        "; each fold's best checkpoint is in its folder under " + base.out_dir);
  }
  fmt::print("\n{}\nWritten: {} and {}\n", markdown_table(table), json_path,
             fs::path(json_path).replace_extension(".md").string());
  return table;
}

inline void add_train_commands(CLI::App& app) {
  // --- train -------------------------------------------------------------------------
  {
    struct Args {
      TrainSettings s;
      std::string llrd = "none";
      std::optional<double> swa_lr;
      std::optional<int64_t> eval_every;
      std::string lr_log, plot_dir, resume_dir;
      double dist_timeout = 300.0;
    };
    auto a = std::make_shared<Args>();
    a->s.data = std::string(kDataDir) + "/sotu_passages.csv.gz";
    a->s.model_dir = std::string(kAssetsDir) + "/demo-model";
    auto* cmd =
        app.add_subcommand("train", "fine-tune on every fold (or one) with the techniques chosen");
    detail::add_experiment_options(cmd, a->s);
    cmd->add_option("--llrd", a->llrd, "learning rates by depth, the article's rates")
        ->capture_default_str()
        ->check(CLI::IsMember({"none", "layerwise", "grouped"}));
    cmd->add_option("--warmup-steps", a->s.warmup_steps)
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--reinit-layers", a->s.reinit_layers,
                    "re-initialize the top N layers and the pooler")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--swa-lr", a->swa_lr,
                    "stochastic weight averaging with this SWALR rate (article: 2e-6)")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--eval-every", a->eval_every, "evaluate every N batches (article: 10)")
        ->check(CLI::PositiveNumber);
    cmd->add_flag("--random-init", a->s.random_init,
                  "HF-initialized weights instead of model.safetensors");
    cmd->add_option("--lr-log", a->lr_log, "CSV of every step's learning rate per layer");
    cmd->add_option("--plot", a->plot_dir, "folder for the lr and RMSE figures (gnuplot)");
    cmd->add_option("--grad-accum", a->s.grad_accum, "batches per optimizer step")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    cmd->add_option("--unfreeze-every", a->s.unfreeze_every,
                    "gradual unfreezing: the head and top layer first, one more block every N "
                    "--unfreeze-unit")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--unfreeze-unit", a->s.unfreeze_unit, "epochs or (optimizer) steps")
        ->capture_default_str()
        ->check(CLI::IsMember({"epochs", "steps"}));
    cmd->add_option("--save-state-every", a->s.save_state_every,
                    "write <out>/fold<k>/state.pt every N optimizer steps, at Ctrl-C and at the "
                    "fold's end (0: those two only)")
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--dist-timeout", a->dist_timeout,
                    "under torchrun: seconds a rank waits for the others (joining, each "
                    "collective) before it fails naming the lost rank")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    cmd->add_flag("--check-replicas", a->s.check_replicas,
                  "under torchrun: after each averaged step and evaluation, check that the "
                  "weights and the SWA average are identical on every rank");
    cmd->add_flag("--log-all-ranks", a->s.log_all_ranks,
                  "under torchrun: the other ranks print their evaluations and fold summaries "
                  "too, as 'rank <r>: ...' (rank 0 alone writes files)");
    auto* out_option = cmd->get_option("--out");
    cmd->add_option("--resume", a->resume_dir,
                    "continue the run in DIR from its training states (same flags as that run)")
        ->excludes(out_option);
    cmd->callback([a] {
      auto s = a->s;
      if (!a->resume_dir.empty()) {
        s.out_dir = a->resume_dir;
        s.resume = true;
        bool any = false;
        for (int64_t fold : detail::folds_to_run(s))
          any = any || std::filesystem::exists(state_path(s, fold));
        if (!any)
          throw std::invalid_argument("--resume " + a->resume_dir +
                                      ": no training state there (fold<k>/state.pt); a run "
                                      "writes one when started with --save-state-every N");
      }
      s.llrd = parse_llrd(a->llrd);
      s.swa_lr = a->swa_lr;
      s.eval_every = a->eval_every;
      detail::install_interrupt_handler();
      // torchrun's RANK, WORLD_SIZE, ... : data-parallel; none: single process.
      auto dist = finetune::Distributed::from_env(
          device_from_flag(s.device),
          finetune::DistributedOptions().timeout(std::chrono::milliseconds(
              static_cast<int64_t>(std::llround(a->dist_timeout * 1000.0)))));
      const bool writer = dist.is_writer();
      const ModelFiles files = load_model_files(s.model_dir, s.max_length);
      const EncodedDataset data = load_dataset(s, *files.tokenizer);
      if (writer)
        fmt::print(
            "train: {}\nrates: {} ({} LLRD); warm-up {} steps, re-init {} layers, SWA {}, "
            "evaluation {}\n",
            detail::data_summary(s, data, files, s.random_init),
            describe_rates(s.llrd, s.lr_scale, s.swa_lr), llrd_name(s.llrd), s.warmup_steps,
            s.reinit_layers,
            s.swa_lr ? fmt::format("from epoch {}", s.swa_start_epoch) : std::string("off"),
            s.eval_every ? fmt::format("every {} batches from epoch {}", *s.eval_every,
                                       s.eval_every_from_epoch)
                         : std::string("once per epoch"));
      if (writer && dist.active())
        fmt::print("data-parallel: {} ranks, global batch {} ({} rows per rank)\n",
                   dist.world_size(), s.batch_size,
                   (s.batch_size + dist.world_size() - 1) / dist.world_size());
      std::ofstream lr_log;
      if (!a->lr_log.empty() && writer) {
        lr_log.open(a->lr_log);
        if (!lr_log) throw std::invalid_argument("--lr-log " + a->lr_log + ": cannot write");
        write_lr_csv_header(lr_log, layer_lr_columns(files.config.num_hidden_layers),
                            /*with_fold=*/detail::folds_to_run(s).size() > 1);
      }
      const auto results = detail::run_folds(s, files, data, /*print_evaluations=*/true, "",
                                             a->lr_log.empty() ? nullptr : &lr_log, &dist);
      if (!writer) {  // rank 0 reports and writes
        if (!results.empty() && results.back().interrupted)
          throw Interrupted("interrupted after step " + std::to_string(results.back().steps));
        return;
      }
      detail::plot_results(a->plot_dir, "train", results);
      const auto scores = detail::fold_scores(results);
      const auto& best = scores.best;
      const auto& swa = scores.swa;
      std::string cv;
      for (double b : best) cv += fmt::format("{}{:.4f}", cv.empty() ? "" : ", ", b);
      fmt::print("CV: [{}]  mean {:.4f} ± {:.4f}{}\n", cv, mean_of(best), std_of(best),
                 swa.empty() ? "" : fmt::format("  (SWA weights: mean {:.4f})", mean_of(swa)));
      const nlohmann::json summary = {{"rates", describe_rates(s.llrd, s.lr_scale, s.swa_lr)},
                                      {"llrd", llrd_name(s.llrd)},
                                      {"precision", s.precision},
                                      {"mean", mean_of(best)},
                                      {"std", std_of(best)},
                                      {"folds", scores.folds}};
      const std::string path = (std::filesystem::path(s.out_dir) / "results.json").string();
      write_results_json(path, summary);
      if (!results.empty() && results.back().interrupted)
        throw Interrupted("interrupted after step " + std::to_string(results.back().steps) +
                          " of fold " + std::to_string(results.back().fold) +
                          "; best checkpoint: " + results.back().checkpoint_dir +
                          "/best.safetensors");
    });
  }
  // --- table -------------------------------------------------------------------------
  {
    struct Args {
      TrainSettings s;
      LadderSettings ladder;
    };
    auto a = std::make_shared<Args>();
    a->s.data = std::string(kDataDir) + "/sotu_passages.csv.gz";
    a->s.model_dir = std::string(kAssetsDir) + "/demo-model";
    a->s.out_dir = "runs/table";
    auto* cmd = app.add_subcommand(
        "table", "the article's ladder of techniques, as a Markdown table and JSON");
    detail::add_experiment_options(cmd, a->s);
    auto& l = a->ladder;
    cmd->add_option("--warmup-steps", l.warmup_steps, "warm-up of the rows from '+ warm-up' on")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--reinit-layers", l.reinit_layers, "layers re-initialized from '+ re-init' on")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--swa-lr", l.swa_lr, "SWALR rate of the SWA rows (before --lr-scale)")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    cmd->add_option("--eval-every", l.eval_every, "batches between evaluations in the last row")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    cmd->add_flag("--with-random-init", l.with_random_init,
                  "add the basic row from a randomly initialized model (did pretraining help?)");
    cmd->add_option("--rows", l.rows, "run only these rows (1-based)")->delimiter(',');
    cmd->add_option("--json", l.json,
                    "table as JSON (default <out>/table.json; Markdown beside it)");
    cmd->add_option("--plot", l.plot_dir, "folder for every row's lr and RMSE figures (gnuplot)");
    cmd->callback([a] {
      detail::install_interrupt_handler();
      run_table(a->s, a->ladder);
    });
  }
}

}  // namespace roberta_regression
