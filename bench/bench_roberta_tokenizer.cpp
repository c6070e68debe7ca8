// Figure 5: byte-level BPE encode throughput of the example's RoBERTa
// tokenizer, one thread, on the committed text set's prose (State of the
// Union sentences and passages, tests/reference/roberta_tokenizer_texts.json).
#include <benchmark/benchmark.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "text/tokenizer.hpp"

namespace {

// The repository root, from this file's own path (bench/<this file>).
std::string repo_root() {
  std::string path = __FILE__;
  return path.substr(0, path.rfind("/bench/"));
}

std::vector<std::string> prose() {
  std::ifstream in(repo_root() + "/tests/reference/roberta_tokenizer_texts.json");
  std::vector<std::string> texts;
  for (const auto& entry : nlohmann::json::parse(in)) {
    // The prose: entries of at least 80 characters that are plain text.
    if (entry.contains("text") && entry["text"].get<std::string>().size() >= 80)
      texts.push_back(entry["text"].get<std::string>());
  }
  return texts;
}

void encode_all(benchmark::State& state, int64_t cache_capacity) {
  const std::string assets = repo_root() + "/examples/roberta_regression/assets/roberta-bpe/";
  roberta_regression::RobertaTokenizer tokenizer(
      assets + "vocab.json", assets + "merges.txt",
      roberta_regression::RobertaTokenizerOptions{false, static_cast<size_t>(cache_capacity)});
  const auto texts = prose();
  int64_t bytes = 0;
  for (const auto& t : texts) bytes += static_cast<int64_t>(t.size());
  for (auto _ : state) {
    for (const auto& t : texts) benchmark::DoNotOptimize(tokenizer.tokenize(t).data());
  }
  state.SetBytesProcessed(state.iterations() * bytes);
}

// Steady state, the word cache warm (HF's BPE caches words the same way).
void BM_TokenizerEncodeCached(benchmark::State& state) { encode_all(state, 10000); }
// Every word merged from scratch.
void BM_TokenizerEncodeNoCache(benchmark::State& state) { encode_all(state, 0); }

}  // namespace

BENCHMARK(BM_TokenizerEncodeCached)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TokenizerEncodeNoCache)->Unit(benchmark::kMillisecond);
