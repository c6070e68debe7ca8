// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// libFuzzer entry point for the history file PeriodicEvaluator::load (include/
// finetune/periodic_evaluator.hpp) resumes: a real run evaluates 1 to 8 times
// (the first input byte, also csv or jsonl) and saves its state; the rest of
// the input replaces its history file; then a fresh evaluator loads the
// state. The contract: load() returns or throws std::invalid_argument; after
// a load the history file is a prefix of what was there, and one more step
// appends exactly one whole row to it. See docs/fuzzing.md.
#include "evaluator_fuzz.hpp"
#include "fuzz_check.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int steps = 1 + (data[0] & 7);
  const bool jsonl = (data[0] & 8) != 0;
  const std::string history(reinterpret_cast<const char*>(data) + 1, size - 1);

  const std::string dir = fuzz::fresh_folder();
  const auto options =
      finetune::PeriodicEvaluatorOptions(dir).eval_every(1).eval_every_from_epoch(0).history_format(
          jsonl ? finetune::HistoryFormat::jsonl : finetune::HistoryFormat::csv);
  const auto save = [](const std::string& path) { fuzz::write_file(path, "checkpoint"); };
  const auto quiet = [](const std::string&) {};
  torch::serialize::OutputArchive state;
  {
    finetune::PeriodicEvaluator run(options, save, quiet);
    for (int i = 0; i < steps; ++i) run.step(0, i, steps, [i] { return 1.0 / (1 + i % 3); });
    run.save(state);
  }
  const std::string path = dir + (jsonl ? "/history.jsonl" : "/history.csv");
  fuzz::write_file(path, history);

  torch::serialize::InputArchive archive;
  fuzz::round_trip(state, archive);
  finetune::PeriodicEvaluator resumed(options, save, quiet);
  try {
    resumed.load(archive);
  } catch (const std::invalid_argument&) {
    return 0;  // a history the state cannot continue: rejected
  }
  const std::string kept = fuzz::read_file(path);
  FUZZ_CHECK(kept.size() <= history.size() && history.compare(0, kept.size(), kept) == 0,
             "load() left a history that is not a prefix of the file");
  resumed.step(0, steps - 1, steps, [] { return 0.25; });
  const std::string after = fuzz::read_file(path);
  const auto rows =
      std::count(after.begin() + static_cast<std::ptrdiff_t>(std::min(kept.size(), after.size())),
                 after.end(), '\n');
  FUZZ_CHECK(after.size() > kept.size() && after.compare(0, kept.size(), kept) == 0 &&
                 after.back() == '\n' && (rows == 1 || (kept.empty() && rows == 2)),
             "a step after load() did not append exactly one history row (a header first "
             "when the file was empty)");
  return 0;
}
