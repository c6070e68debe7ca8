// `roberta_regression pretrain`: masked-language-model pretraining of a small
// RoBERTa on a CSV's excerpts (never its targets). This is how the demo's
// embedded model in assets/demo-model was made; see that folder's README.
#pragma once

#include <fmt/core.h>
#include <fmt/ostream.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <finetune/periodic_evaluator.hpp>  // atomic_write_text

#include "data/data.hpp"
#include "model/model_names.hpp"
#include "model/roberta_model.hpp"
#include "roberta_paths.hpp"
#include "text/tokenizer.hpp"
#include "training/pretrain.hpp"

namespace roberta_regression {

inline void add_pretrain_command(CLI::App& app) {
  struct Args {
    std::string data = std::string(kDataDir) + "/sotu_passages.csv.gz";
    std::string tokenizer_dir = std::string(kAssetsDir) + "/demo-bpe";
    std::string out;
    std::string device = "cpu";
    PretrainOptions options;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "pretrain", "masked-language-model pretraining of a small RoBERTa on a CSV's excerpts");
  cmd->add_option("--data", args->data, "CSV with an `excerpt` column (.csv or .csv.gz)")
      ->capture_default_str();
  cmd->add_option("--tokenizer", args->tokenizer_dir, "folder with vocab.json and merges.txt")
      ->capture_default_str();
  cmd->add_option("--out", args->out,
                  "output folder: config.json, model.safetensors, vocab.json, merges.txt, "
                  "pretrain_log.csv, recipe.json")
      ->required();
  auto& o = args->options;
  cmd->add_option("--hidden-size", o.hidden_size)
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--layers", o.num_hidden_layers)
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--heads", o.num_attention_heads)
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--intermediate-size", o.intermediate_size)
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-length", o.max_length, "tokens per window, <s> and </s> included")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{3}, int64_t{4096}));
  cmd->add_option("--batch-size", o.batch_size)->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--steps", o.steps)->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--lr", o.lr, "peak learning rate")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--warmup-fraction", o.warmup_fraction)
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--weight-decay", o.weight_decay)
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--mask-probability", o.mask_probability)
      ->capture_default_str()
      ->check(CLI::Range(0.01, 0.99));
  cmd->add_option("--seed", o.seed)->capture_default_str();
  cmd->add_option("--log-every", o.log_every)->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--device", args->device)
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));

  cmd->callback([args] {
    const torch::Device device = device_from_flag(args->device);
    const auto& o = args->options;
    namespace fs = std::filesystem;
    const fs::path tok_dir(args->tokenizer_dir), out(args->out);

    RobertaTokenizer tokenizer((tok_dir / "vocab.json").string(),
                               (tok_dir / "merges.txt").string());
    std::vector<std::string> texts;
    for (const auto& row : read_commonlit_csv(args->data).rows) texts.push_back(row.excerpt);
    fmt::print("pretrain: {} excerpts from {}, vocabulary {} ({}), {} threads, {}\n", texts.size(),
               args->data, tokenizer.vocab_size(), args->tokenizer_dir, torch::get_num_threads(),
               args->device);

    fs::create_directories(out);
    std::ofstream log((out / "pretrain_log.csv").string());
    log << "step,loss,masked_accuracy,lr\n";
    const auto start = std::chrono::steady_clock::now();
    auto [model, config] =
        pretrain_mlm(tokenizer, texts, o, device, [&](const PretrainLogEntry& e) {
          const double seconds =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          fmt::print("step {:>6}/{}  loss {:.4f}  masked accuracy {:.3f}  lr {:.3g}  {:.0f} s\n",
                     e.step, o.steps, e.loss, e.masked_accuracy, e.lr, seconds);
          std::fflush(stdout);
          log << fmt::format("{},{:.6f},{:.6f},{:.6g}\n", e.step, e.loss, e.masked_accuracy, e.lr);
          log.flush();
        });

    save_pretrained(*model, config, out.string());
    // The tokenizer files beside the weights, through the same atomic writer.
    for (const char* name : {"vocab.json", "merges.txt"}) {
      std::ifstream in(tok_dir / name, std::ios::binary);
      std::ostringstream text;
      text << in.rdbuf();
      if (!in || !text) throw std::runtime_error((tok_dir / name).string() + ": cannot read");
      finetune::atomic_write_text((out / name).string(), text.str());
    }
    const nlohmann::json recipe = {
        {"command", "roberta_regression pretrain"},
        {"data", fs::path(args->data).filename().string()},
        {"tokenizer", tok_dir.filename().string()},
        {"hidden_size", o.hidden_size},
        {"layers", o.num_hidden_layers},
        {"heads", o.num_attention_heads},
        {"intermediate_size", o.intermediate_size},
        {"max_length", o.max_length},
        {"batch_size", o.batch_size},
        {"steps", o.steps},
        {"lr", o.lr},
        {"warmup_fraction", o.warmup_fraction},
        {"weight_decay", o.weight_decay},
        {"mask_probability", o.mask_probability},
        {"seed", o.seed},
        {"threads", torch::get_num_threads()},
        {"device", args->device},
        {"libtorch", TORCH_VERSION},
        {"seconds",
         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()}};
    finetune::atomic_write_text((out / "recipe.json").string(), recipe.dump(2) + "\n");
    fmt::print("pretrain: wrote {}\n", out.string());
  });
}

}  // namespace roberta_regression
