// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// libFuzzer entry point for the model's config.json reader
// (examples/roberta_regression/model/roberta_config.hpp). The contract: any bytes
// either give a config or throw std::invalid_argument; a config read passes
// its own checks again when written and read back (to_json -> from_json gives
// the same JSON). See docs/fuzzing.md.
#include "fuzz_check.hpp"
#include "model/roberta_config.hpp"

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using roberta_regression::RobertaConfig;
  RobertaConfig config;
  try {
    config = RobertaConfig::from_json_text(std::string(reinterpret_cast<const char*>(data), size),
                                           "config.json");
  } catch (const std::invalid_argument&) {
    return 0;
  }
  const nlohmann::json written = config.to_json();
  FUZZ_CHECK(RobertaConfig::from_json(written, "written").to_json() == written,
             "to_json -> from_json changed the config");
  FUZZ_CHECK(config.hidden_size % config.num_attention_heads == 0 &&
                 config.pad_token_id < config.vocab_size,
             "a config read breaks the model's constraints");
  return 0;
}
