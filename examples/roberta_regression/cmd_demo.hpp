// `roberta_regression demo`: what `make demo` runs.
#pragma once

#include <fmt/core.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>

namespace roberta_regression {

/// Placeholder until the example's experiment lands (issue #8): it says what
/// exists and what does not, and reports the LibTorch it runs on, so
/// `make demo` shows a working toolchain.
inline void add_demo_command(CLI::App& app) {
  auto* demo = app.add_subcommand("demo", "run the technique table on the embedded data set");
  demo->callback([] {
    fmt::print(
        "roberta_regression demo: placeholder. The RoBERTa regression experiment on the\n"
        "embedded State of the Union data set (train, table, the shipped demo model) is\n"
        "not built yet (issue #8). Built so far: the Hugging Face-compatible model\n"
        "(`forward`), the tokenizer (`tokenize`), masked-LM pretraining (`pretrain`),\n"
        "the data reader and the article's folds.\n"
        "Toolchain check: LibTorch {} with {} intra-op thread(s), CUDA available: {}.\n",
        TORCH_VERSION, torch::get_num_threads(), torch::cuda::is_available() ? "yes" : "no");
  });
}

}  // namespace roberta_regression
