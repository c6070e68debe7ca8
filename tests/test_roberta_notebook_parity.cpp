// The example's training loop equals the article's notebook step for step
// (issue 18, item 4): `roberta_regression table --notebook-exact --dropout 0
// --trace DIR` runs the 7 rows of the ladder on a slice of the embedded
// passages, and tests/reference/check_notebook_loop.py re-runs the notebook's
// run_training (transformers' RobertaModel, the notebook's optimizer builders,
// transformers.AdamW's update, get_scheduler("linear"), swa_utils, its
// evaluation schedule) from the traced initial weights and batch order. Every
// step's training loss and every evaluation's RMSE (raw and SWA weights) must
// agree to 1e-4 relative, for at least 100 steps per row.
// Without the example's binary or the venv's Python (transformers), the test
// is skipped, visibly.
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "catch.hpp"
#include "roberta_paths.hpp"
#include "test_helpers.hpp"

namespace fs = std::filesystem;
using finetune_test::quote;
using finetune_test::TempDir;
using nlohmann::json;

namespace {

/// The binary and a Python with transformers, or a visible skip.
void require_tools() {
  const std::string exe = finetune_test::kRobertaExe, py = finetune_test::kPython;
  if (exe.empty() || !fs::exists(exe))
    finetune_test::skip("the roberta_regression example is not built");
  if (py.empty() || !fs::exists(py))
    finetune_test::skip("no Python for the oracle (FINETUNE_PYTHON): run scripts/setup.sh");
  if (finetune_test::run_command(quote(py) + " -c 'import transformers, safetensors' 2>&1")
          .status != 0)
    finetune_test::skip(py + " lacks transformers or safetensors: run scripts/setup.sh");
}

// The settings: small enough for about a minute per side on one thread, long
// enough for >= 100 steps per row. --lr-scale 100 makes the rates large
// enough (1e-4 to 3.6e-4) that the optimizer's details (the order of the
// weight decay, eps) move the losses by more than the tolerance.
constexpr int kPassages = 400, kEpochs = 5, kBatch = 8, kMaxLength = 32;

}  // namespace

TEST_CASE("table --notebook-exact equals the notebook's loop step by step, every row",
          "[roberta][notebook]") {
  require_tools();
  TempDir tmp;
  const std::string csv = tmp.file("passages.csv");
  const std::string data = std::string(roberta_regression::kDataDir) + "/sotu_passages.csv.gz";
  // The first passages of the embedded data, CSV quoting kept (Python's csv module).
  const auto sliced = finetune_test::run_command(
      quote(finetune_test::kPython) +
      " -c 'import csv,gzip,sys; r=csv.reader(gzip.open(sys.argv[1],\"rt\",encoding=\"utf-8\","
      "newline=\"\")); w=csv.writer(open(sys.argv[2],\"w\",encoding=\"utf-8\",newline=\"\")); "
      "[w.writerow(row) for i,row in zip(range(" +
      std::to_string(kPassages + 1) + "),r)]' " + quote(data) + " " + quote(csv) + " 2>&1");
  INFO(sliced.output);
  REQUIRE(sliced.status == 0);

  const std::string trace = tmp.file("trace");
  std::ostringstream command;
  command << quote(finetune_test::kRobertaExe) << " --threads 1 table --notebook-exact --dropout 0"
          << " --model " << quote(std::string(roberta_regression::kAssetsDir) + "/demo-model")
          << " --data " << quote(csv) << " --out " << quote(tmp.file("out")) << " --trace "
          << quote(trace) << " --folds 2 --fold 0 --epochs " << kEpochs << " --batch-size "
          << kBatch << " --max-length " << kMaxLength
          << " --lr-scale 100 --reinit-layers 2 --warmup-steps 20 --swa-start-epoch 3"
          << " --eval-every 10 --device cpu 2>&1";
  const auto run = finetune_test::run_command(command.str());
  INFO(command.str() << "\n" << run.output);
  REQUIRE(run.status == 0);

  // stderr apart: stdout's last line is the JSON.
  const auto check =
      finetune_test::run_split("OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 " +
                                   quote(finetune_test::kPython) + " " +
                                   quote((fs::path(finetune_test::kSourceDir) / "tests" /
                                          "reference" / "check_notebook_loop.py")
                                             .string()) +
                                   " " + quote(trace),
                               tmp.file("stderr.txt"));
  INFO("check_notebook_loop.py: " << check.out << "\nstderr: " << check.err);
  const auto end = check.out.find_last_not_of('\n');
  REQUIRE(end != std::string::npos);
  const auto start = check.out.rfind('\n', end);
  const json results = json::parse(check.out.substr(start == std::string::npos ? 0 : start + 1));
  REQUIRE(results.size() == 7);  // 7 rows, fold 0 each
  for (const auto& r : results) {
    INFO(r.dump());
    CHECK(r["problems"].empty());
    CHECK(r["steps"].get<int64_t>() >= 100);
    CHECK(r["worst"].get<double>() <= 1e-4);
    std::printf(
        "notebook parity %s: %lld steps, %lld evaluations (%lld SWA), worst relative "
        "difference: loss %.3g, RMSE %.3g, SWA RMSE %.3g\n",
        r["trace"].get<std::string>().c_str(), static_cast<long long>(r["steps"].get<int64_t>()),
        static_cast<long long>(r["evaluations"].get<int64_t>()),
        static_cast<long long>(r["swa_evaluations"].get<int64_t>()), r["worst_loss"].get<double>(),
        r["worst_rmse"].get<double>(), r["worst_swa_rmse"].get<double>());
  }
  CHECK(check.status == 0);
}

TEST_CASE("--notebook-exact: refused with --grad-accum; a resumed run must share it",
          "[roberta][notebook]") {
  const std::string exe = finetune_test::kRobertaExe;
  if (exe.empty() || !fs::exists(exe))
    finetune_test::skip("the roberta_regression example is not built");
  TempDir tmp;
  // Tiny runs on the embedded data: 1 epoch of 64-row batches of 8 tokens.
  const std::string base = quote(exe) +
                           " --threads 1 train --llrd layerwise --folds 2 --fold 0 --epochs 1"
                           " --batch-size 64 --max-length 8 --device cpu";
  const auto accum = finetune_test::run_command(base + " --notebook-exact --grad-accum 2 --out " +
                                                quote(tmp.file("accum")) + " 2>&1");
  INFO(accum.output);
  CHECK(accum.status != 0);
  CHECK(finetune_test::contains(accum.output, "--notebook-exact: the notebook has no gradient"));

  const auto first = finetune_test::run_command(base + " --save-state-every 0 --out " +
                                                quote(tmp.file("run")) + " 2>&1");
  INFO(first.output);
  REQUIRE(first.status == 0);
  const auto resumed = finetune_test::run_command(base + " --notebook-exact --resume " +
                                                  quote(tmp.file("run")) + " 2>&1");
  INFO(resumed.output);
  CHECK(resumed.status != 0);
  CHECK(finetune_test::contains(resumed.output, "saved by a run with other settings"));
  CHECK(finetune_test::contains(resumed.output, "notebook_exact=1"));
}
