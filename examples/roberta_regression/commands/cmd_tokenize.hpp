// `roberta_regression tokenize`: a model's token ids of each line of stdin, as
// JSON: RoBERTa's byte-level BPE, or a model folder's own tokenizer.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

#include "model/model_names.hpp"
#include "model/roberta_config.hpp"
#include "roberta_paths.hpp"
#include "text/model_tokenizer.hpp"

namespace roberta_regression {

/// Reads UTF-8 lines on stdin (a trailing '\r' is dropped) and prints one JSON
/// object a line, {"ids":[...],"mask":[...]}: `<s> ... </s>` (or BERT's
/// `[CLS] ... [SEP]`), truncated and padded to --max-length when it is given
/// (0: neither). --model DIR (or "minilm") takes the folder's tokenizer, by its
/// config.json's model_type; otherwise --vocab and --merges, which default to
/// roberta-base's files (the committed assets/roberta-bpe).
inline void add_tokenize_command(CLI::App& app) {
  struct Args {
    std::string model;
    std::string vocab;
    std::string merges;
    int64_t max_length = 0;
    bool add_prefix_space = false;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("tokenize", "a model's token ids of each stdin line, as JSON");
  args->vocab = std::string(kAssetsDir) + "/roberta-bpe/vocab.json";
  args->merges = std::string(kAssetsDir) + "/roberta-bpe/merges.txt";
  auto* model = cmd->add_option(
      "--model", args->model,
      "model folder (config.json and its tokenizer: vocab.json + merges.txt, or vocab.txt), "
      "or \"minilm\"");
  auto* vocab =
      cmd->add_option("--vocab", args->vocab, "vocab.json (token -> id)")->capture_default_str();
  auto* merges = cmd->add_option("--merges", args->merges, "merges.txt (one merge a line)")
                     ->capture_default_str();
  model->excludes(vocab)->excludes(merges);
  cmd->add_option("--max-length", args->max_length,
                  "truncate and pad to this many ids, <s> and </s> included (0: neither)")
      ->capture_default_str();
  cmd->add_flag("--add-prefix-space", args->add_prefix_space,
                "encode a leading word like any other (RoBERTa's default: off)");
  cmd->callback([args] {
    if (args->max_length < 0 || args->max_length == 1) {
      throw std::invalid_argument("--max-length must be 0 or at least 2, got " +
                                  std::to_string(args->max_length));
    }
    auto tokenizer = [&] {
      if (args->model.empty()) {
        RobertaTokenizerOptions options;
        options.add_prefix_space = args->add_prefix_space;
        return ModelTokenizer(RobertaTokenizer(args->vocab, args->merges, options));
      }
      if (args->add_prefix_space)
        throw std::invalid_argument("--add-prefix-space goes with --vocab/--merges, not --model");
      const std::string dir = resolve_model_dir(args->model);
      const auto config = RobertaConfig::from_json_file(dir + "/config.json");
      return ModelTokenizer::from_model_dir(dir, config.model_type);
    }();
    std::ios::sync_with_stdio(false);
    std::string line;
    while (std::getline(std::cin, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      const Encoding e = tokenizer.encode(line, args->max_length);
      std::cout << nlohmann::json{{"ids", e.input_ids}, {"mask", e.attention_mask}}.dump() << '\n';
    }
    std::cout.flush();
    if (std::cin.bad()) throw std::runtime_error("error reading stdin");
  });
}

}  // namespace roberta_regression
