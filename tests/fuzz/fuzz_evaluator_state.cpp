// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// libFuzzer entry point for PeriodicEvaluator::load (include/finetune/
// periodic_evaluator.hpp): the evaluator's state file as any content the
// file format can hold. A state file is a torch::save archive (a zip with
// CRCs, which byte-level mutation rarely gets through), so the input
// describes the archive instead and the target writes it with LibTorch and
// reads it back: two bytes say which of the fourteen keys are present; each
// present key takes a byte (bits 0-2: dtype long, double, float, int, bool,
// half, a 2-d long; bits 3-4: 0 to 3 elements) and 8 bytes per element; a
// last byte says whether history.csv exists, and the rest is its contents.
// The contract: load() returns or throws std::invalid_argument (LibTorch's
// c10::Error escaping is a finding), and after a load an evaluator that has
// not stopped steps and writes one more history row. See docs/fuzzing.md.
#include "evaluator_fuzz.hpp"
#include "fuzz_bytes.hpp"
#include "fuzz_check.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace {

using fuzz::Bytes;

torch::Tensor make_tensor(Bytes& in) {
  const uint8_t kind = in.byte();
  const int64_t n = (kind >> 3) & 3;
  std::vector<int64_t> words;
  for (int64_t i = 0; i < n; ++i) words.push_back(in.word());
  auto longs = torch::tensor(words, torch::kLong);
  switch (kind & 7) {
    case 1:
    case 5: {  // the words' bits as doubles (NaN, inf, subnormals...)
      std::vector<double> d(words.size());
      if (!words.empty()) std::memcpy(d.data(), words.data(), words.size() * sizeof(double));
      auto t = torch::tensor(d, torch::kDouble);
      return (kind & 7) == 5 ? t.to(torch::kHalf) : t;
    }
    case 2:
      return longs.to(torch::kFloat);
    case 3:
      return longs.to(torch::kInt);
    case 4:
      return longs.to(torch::kBool);
    case 6:
      return longs.reshape({1, n});
    default:
      return longs;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::array<const char*, 14> keys = {"mode",           "best",
                                                   "best_averaged",  "bad_evaluations",
                                                   "global_step",    "num_evaluations",
                                                   "history_rows",   "history_bytes",
                                                   "last_epoch",     "last_batch",
                                                   "stopped",        "epoch",
                                                   "steps_in_epoch", "step_evaluated"};
  Bytes in{data, size};
  const unsigned present = in.byte() | (static_cast<unsigned>(in.byte()) << 8);
  torch::serialize::OutputArchive out;
  for (size_t k = 0; k < keys.size(); ++k)
    if (present & (1u << k))
      out.write(std::string("periodic_evaluator_") + keys[k], make_tensor(in));
  const bool history_exists = (in.byte() & 1) != 0;
  const std::string history(reinterpret_cast<const char*>(data) + in.pos, size - in.pos);

  const std::string dir = fuzz::fresh_folder();
  if (history_exists) fuzz::write_file(dir + "/history.csv", history);
  torch::serialize::InputArchive archive;
  fuzz::round_trip(out, archive);
  finetune::PeriodicEvaluator evaluator(
      finetune::PeriodicEvaluatorOptions(dir).eval_every(1).eval_every_from_epoch(0),
      [](const std::string& path) { fuzz::write_file(path, "checkpoint"); },
      [](const std::string&) {});
  try {
    evaluator.load(archive);
  } catch (const std::invalid_argument&) {
    return 0;  // rejected state: the expected outcome for malformed ones
  }
  if (evaluator.should_stop()) return 0;  // a stopped run evaluates no more
  const std::string before = fuzz::read_file(dir + "/history.csv");
  // eval_every 1 from epoch 0: the step evaluates, its epoch's end does not.
  evaluator.step([] { return 0.5; });
  const std::string after = fuzz::read_file(dir + "/history.csv");
  FUZZ_CHECK(after.size() > before.size() && after.compare(0, before.size(), before) == 0 &&
                 after.back() == '\n',
             "a step after load() did not append one history row");
  evaluator.end_epoch([] { return 0.5; });
  FUZZ_CHECK(fuzz::read_file(dir + "/history.csv") == after,
             "end_epoch() evaluated again after an evaluated step");
  if (evaluator.should_stop()) return 0;        // that step may have stopped the run
  evaluator.step(0, 0, 1, [] { return 0.5; });  // the batch-index API after it
  FUZZ_CHECK(fuzz::read_file(dir + "/history.csv").size() > after.size(),
             "a batch-index step after load() did not append one history row");
  return 0;
}
