// `roberta_regression tokenize`: RoBERTa ids of each line of stdin, as JSON.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

#include "roberta_paths.hpp"
#include "text/tokenizer.hpp"

namespace roberta_regression {

/// Reads UTF-8 lines on stdin (a trailing '\r' is dropped) and prints one JSON
/// object a line, {"ids":[...],"mask":[...]}: `<s> ... </s>`, truncated and
/// padded to --max-length when it is given (0: neither). --vocab and --merges
/// default to roberta-base's files (the committed assets/roberta-bpe).
inline void add_tokenize_command(CLI::App& app) {
  struct Args {
    std::string vocab;
    std::string merges;
    int64_t max_length = 0;
    bool add_prefix_space = false;
  };
  auto args = std::make_shared<Args>();
  auto* cmd =
      app.add_subcommand("tokenize", "RoBERTa byte-level BPE ids of each stdin line, as JSON");
  args->vocab = std::string(kAssetsDir) + "/roberta-bpe/vocab.json";
  args->merges = std::string(kAssetsDir) + "/roberta-bpe/merges.txt";
  cmd->add_option("--vocab", args->vocab, "vocab.json (token -> id)")->capture_default_str();
  cmd->add_option("--merges", args->merges, "merges.txt (one merge a line)")->capture_default_str();
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
    RobertaTokenizerOptions options;
    options.add_prefix_space = args->add_prefix_space;
    RobertaTokenizer tokenizer(args->vocab, args->merges, options);
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
