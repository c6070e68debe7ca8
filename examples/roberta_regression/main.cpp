// roberta_regression: the article's RoBERTa regression experiment in C++.
// Each subcommand lives in its own cmd_<name>.hpp and registers itself here.
#include <torch/torch.h>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <thread>

#include "commands/cmd_demo.hpp"
#include "commands/cmd_forward.hpp"
#include "commands/cmd_pretrain.hpp"
#include "commands/cmd_tokenize.hpp"
#include "commands/cmd_train.hpp"

int main(int argc, char** argv) {
  CLI::App app{"roberta_regression: fine-tune RoBERTa for regression with finetune"};
  app.require_subcommand(1);
  app.fallthrough();  // `train --threads 2` as well as `--threads 2 train`

  // LibTorch takes half the cores by default; the example takes them all.
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  app.add_option("--threads", threads, "intra-op CPU threads (default: all cores)")
      ->check(CLI::Range(1, 1024));
  app.parse_complete_callback([&threads] { torch::set_num_threads(threads); });

  roberta_regression::add_demo_command(app);
  roberta_regression::add_forward_command(app);
  roberta_regression::add_pretrain_command(app);
  roberta_regression::add_tokenize_command(app);
  roberta_regression::add_train_commands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const roberta_regression::Interrupted& e) {
    fmt::print(stderr, "roberta_regression: {}\n", e.what());
    return 130;
  } catch (const std::exception& e) {
    fmt::print(stderr, "roberta_regression: {}\n", e.what());
    return 1;
  }
  return 0;
}
