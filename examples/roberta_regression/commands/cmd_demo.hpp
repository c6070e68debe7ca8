// `roberta_regression demo`: what `make demo` runs. The article's table on the
// embedded data (State of the Union passages, target = the address's year)
// with the embedded model (assets/demo-model, pretrained by `pretrain`),
// scaled down to fit five minutes on the slower of our two-core machines.
#pragma once

#include <fmt/core.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "commands/cmd_train.hpp"
#include "roberta_paths.hpp"

namespace roberta_regression {

/// The demo's settings: `table` with these flags gives the same run.
inline std::pair<TrainSettings, LadderSettings> demo_settings() {
  TrainSettings s;
  s.data = std::string(kDataDir) + "/sotu_passages.csv.gz";
  s.model_dir = std::string(kAssetsDir) + "/demo-model";
  s.out_dir = "runs/demo";
  s.subsample = 2;              // every other passage: 1,383 of 2,765
  s.folds = 2;                  // article: 5
  s.epochs = 2;                 // article: 15
  s.max_length = 64;            // article: 250 (the passages have 142 to 438 tokens)
  s.lr_scale = 100.0;           // a 4-layer, 128-wide model wants ~100x roberta-base's rates
  s.swa_start_epoch = 1;        // article: 3 of 15; here the last of 2 epochs
  s.eval_every_from_epoch = 1;  // article: 2 of 15
  LadderSettings l;
  l.warmup_steps = 15;        // article: 50 steps, 0.35 of its 141-batch epoch; here 43 batches
  l.reinit_layers = 2;        // article: 5 of 12 layers; here 2 of 4
  l.with_random_init = true;  // did pretraining help?
  return {s, l};
}

inline std::string demo_flags(const std::string& out_dir) {
  const auto [s, l] = demo_settings();
  return fmt::format(
      "table --subsample {} --folds {} --epochs {} --max-length {} --lr-scale {:g} "
      "--swa-start-epoch {} --eval-every-from-epoch {} --warmup-steps {} --reinit-layers {} "
      "--with-random-init --out {}",
      s.subsample, s.folds, s.epochs, s.max_length, s.lr_scale, s.swa_start_epoch,
      s.eval_every_from_epoch, l.warmup_steps, l.reinit_layers, out_dir);
}

inline void add_demo_command(CLI::App& app) {
  auto out = std::make_shared<std::string>("runs/demo");
  auto* demo = app.add_subcommand(
      "demo",
      "the article's technique table on the embedded data and model (what `make demo` runs)");
  demo->add_option("--out", *out, "folder of the runs and of table.json / table.md")
      ->capture_default_str();
  demo->callback([out] {
    auto [s, l] = demo_settings();
    s.out_dir = *out;
    fmt::print("demo: the same as `roberta_regression {}`\n", demo_flags(*out));
    detail::install_interrupt_handler();
    run_table(s, l);
  });
}

}  // namespace roberta_regression
