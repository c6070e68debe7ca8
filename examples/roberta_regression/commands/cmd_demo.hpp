// `roberta_regression demo`: what `make demo` runs. The article's table on the
// embedded data (State of the Union passages, target = the address's year)
// with the embedded model (assets/demo-model, pretrained by `pretrain`),
// scaled down to fit about ten minutes on two CPU cores.
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
  s.folds = 2;                  // article: 5
  s.epochs = 3;                 // article: 15
  s.max_length = 96;            // article: 250
  s.lr_scale = 100.0;           // a 4-layer, 128-wide model wants ~100x roberta-base's rates
  s.swa_start_epoch = 2;        // article: 3 of 15; here the last of 3 epochs
  s.eval_every_from_epoch = 1;  // article: 2 of 15
  LadderSettings l;
  l.reinit_layers = 2;        // article: 5 of 12 layers; here 2 of 4
  l.with_random_init = true;  // did pretraining help?
  return {s, l};
}

inline std::string demo_flags(const std::string& out_dir) {
  const auto [s, l] = demo_settings();
  return fmt::format(
      "table --folds {} --epochs {} --max-length {} --lr-scale {:g} --swa-start-epoch {} "
      "--eval-every-from-epoch {} --reinit-layers {} --with-random-init --out {}",
      s.folds, s.epochs, s.max_length, s.lr_scale, s.swa_start_epoch, s.eval_every_from_epoch,
      l.reinit_layers, out_dir);
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
