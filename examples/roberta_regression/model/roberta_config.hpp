// RobertaConfig: the fields of a Hugging Face roberta or bert `config.json`
// the example's model uses. Example code, not library API.
#pragma once

#include <finetune/periodic_evaluator.hpp>  // atomic_write_text
#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace roberta_regression {

/// The config of either encoder family the example implements: "roberta"
/// (the default; defaults are roberta-base's) or "bert" (read from a config.json
/// whose "model_type" is "bert": keys it lacks take HF BertConfig's defaults).
/// Field names are HF's config.json keys. (The name stays RobertaConfig:
/// RobertaModel implements both families.)
struct RobertaConfig {
  /// "roberta" or "bert": the position ids (RoBERTa's count from
  /// pad_token_id + 1, BERT's 0..T-1) and what to_json() declares.
  std::string model_type = "roberta";
  int64_t vocab_size = 50265;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  int64_t max_position_embeddings = 514;
  int64_t type_vocab_size = 1;
  int64_t pad_token_id = 1;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 2;
  double layer_norm_eps = 1e-5;
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  double initializer_range = 0.02;
  std::string hidden_act = "gelu";  ///< only "gelu" (exact erf), as roberta-base

  /// HF BertConfig's defaults (bert-base): vocab 30522, 512 positions, 2 token
  /// types, pad_token_id 0, layer_norm_eps 1e-12; bos/eos are unused by BERT
  /// and not written by to_json().
  static RobertaConfig bert();
  bool is_bert() const { return model_type == "bert"; }
  /// Reads config.json; errors name the file and the key.
  static RobertaConfig from_json_file(const std::string& path);
  /// Reads a config.json's contents in memory; `source` names it in errors.
  static RobertaConfig from_json_text(const std::string& text, const std::string& source);
  /// Reads the keys above from `j` (absent keys keep their defaults, as HF);
  /// `source` names the origin in error messages.
  static RobertaConfig from_json(const nlohmann::json& j, const std::string& source);
  /// A config.json that transformers' AutoConfig/AutoModel load.
  nlohmann::json to_json() const;
  /// Writes to_json() to `path` atomically.
  void save(const std::string& path) const;
};

// --- implementation -----------------------------------------------------------

inline RobertaConfig RobertaConfig::bert() {
  RobertaConfig c;
  c.model_type = "bert";
  c.vocab_size = 30522;
  c.max_position_embeddings = 512;
  c.type_vocab_size = 2;
  c.pad_token_id = 0;
  c.layer_norm_eps = 1e-12;
  return c;
}

inline RobertaConfig RobertaConfig::from_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument(path + ": cannot open the model config");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw std::runtime_error(path + ": read error");
  return from_json_text(text.str(), path);
}

inline RobertaConfig RobertaConfig::from_json_text(const std::string& text,
                                                   const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // parse_error, and out_of_range for a number beyond double's (1e999)
    throw std::invalid_argument(source + ": not valid JSON: " + e.what());
  }
  return from_json(j, source);
}

inline RobertaConfig RobertaConfig::from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw std::invalid_argument(source + ": the config is not a JSON object");
  // An absent model_type reads as RoBERTa (the example's configs before BERT).
  const auto type = j.find("model_type");
  if (type != j.end() && !(*type == "roberta" || *type == "bert"))
    throw std::invalid_argument(
        source + ": key \"model_type\" must be \"roberta\" or \"bert\", got " + type->dump());
  RobertaConfig c = type != j.end() && *type == "bert" ? bert() : RobertaConfig{};
  // `nullable`: null reads as absent (HF writes "bos_token_id": null for BERT).
  auto integer = [&](const char* key, int64_t& field, int64_t minimum, bool nullable = false) {
    if (!j.contains(key)) return;
    const auto& v = j.at(key);
    if (nullable && v.is_null()) return;
    if (!v.is_number_integer())
      throw std::invalid_argument(source + ": key \"" + key + "\" must be an integer, got " +
                                  v.dump());
    field = v.get<int64_t>();
    if (field < minimum)
      throw std::invalid_argument(source + ": key \"" + key + "\" must be at least " +
                                  std::to_string(minimum) + ", got " + v.dump());
  };
  auto real = [&](const char* key, double& field, double lo, double hi) {
    if (!j.contains(key)) return;
    const auto& v = j.at(key);
    if (!v.is_number())
      throw std::invalid_argument(source + ": key \"" + key + "\" must be a number, got " +
                                  v.dump());
    field = v.get<double>();
    if (!(field >= lo && field <= hi))
      throw std::invalid_argument(source + ": key \"" + key + "\" out of range, got " + v.dump());
  };
  integer("vocab_size", c.vocab_size, 1);
  integer("hidden_size", c.hidden_size, 1);
  integer("num_hidden_layers", c.num_hidden_layers, 0);
  integer("num_attention_heads", c.num_attention_heads, 1);
  integer("intermediate_size", c.intermediate_size, 1);
  integer("max_position_embeddings", c.max_position_embeddings, 3);
  integer("type_vocab_size", c.type_vocab_size, 1);
  integer("pad_token_id", c.pad_token_id, 0);
  integer("bos_token_id", c.bos_token_id, 0, /*nullable=*/true);
  integer("eos_token_id", c.eos_token_id, 0, /*nullable=*/true);
  real("layer_norm_eps", c.layer_norm_eps, 0.0, 1.0);
  real("hidden_dropout_prob", c.hidden_dropout_prob, 0.0, 1.0);
  real("attention_probs_dropout_prob", c.attention_probs_dropout_prob, 0.0, 1.0);
  real("initializer_range", c.initializer_range, 0.0, 10.0);
  if (j.contains("hidden_act")) {
    const auto& v = j.at("hidden_act");
    if (!v.is_string() || v.get<std::string>() != "gelu")
      throw std::invalid_argument(
          source + ": key \"hidden_act\" must be \"gelu\" (exact erf), got " + v.dump());
  }
  if (j.contains("position_embedding_type") && j.at("position_embedding_type") != "absolute")
    throw std::invalid_argument(source +
                                ": key \"position_embedding_type\" must be \"absolute\", got " +
                                j.at("position_embedding_type").dump());
  if (c.hidden_size % c.num_attention_heads != 0)
    throw std::invalid_argument(source + ": key \"hidden_size\" (" + std::to_string(c.hidden_size) +
                                ") is not a multiple of \"num_attention_heads\" (" +
                                std::to_string(c.num_attention_heads) + ")");
  if (c.pad_token_id >= c.vocab_size)
    throw std::invalid_argument(source + ": key \"pad_token_id\" is not below \"vocab_size\"");
  return c;
}

inline nlohmann::json RobertaConfig::to_json() const {
  nlohmann::json j = {{"architectures", {is_bert() ? "BertModel" : "RobertaModel"}},
                      {"model_type", model_type},
                      {"vocab_size", vocab_size},
                      {"hidden_size", hidden_size},
                      {"num_hidden_layers", num_hidden_layers},
                      {"num_attention_heads", num_attention_heads},
                      {"intermediate_size", intermediate_size},
                      {"max_position_embeddings", max_position_embeddings},
                      {"type_vocab_size", type_vocab_size},
                      {"pad_token_id", pad_token_id},
                      {"bos_token_id", bos_token_id},
                      {"eos_token_id", eos_token_id},
                      {"layer_norm_eps", layer_norm_eps},
                      {"hidden_dropout_prob", hidden_dropout_prob},
                      {"attention_probs_dropout_prob", attention_probs_dropout_prob},
                      {"initializer_range", initializer_range},
                      {"hidden_act", hidden_act},
                      {"position_embedding_type", "absolute"}};
  if (is_bert()) j.erase("bos_token_id"), j.erase("eos_token_id");
  return j;
}

inline void RobertaConfig::save(const std::string& path) const {
  finetune::atomic_write_text(path, to_json().dump(2) + "\n");
}

}  // namespace roberta_regression
