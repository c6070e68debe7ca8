// The example's `train` killed with SIGKILL at 20 or more random moments and
// resumed each time with --resume (and once stopped with Ctrl-C) ends bit for
// bit where the uninterrupted run ends: final weights, SWA averages, evaluation history and lr log.
// Every technique is on (layer-wise LLRD, warm-up, re-init, SWA, frequent evaluation), on the demo
// model with its dropout. Also: resuming a finished run retrains nothing, and --resume refuses a
// folder without state or a run with other flags.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <torch/torch.h>

#include <fcntl.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "child_process.hpp"
#include "roberta_paths.hpp"
#include "roberta_runs.hpp"
#include "test_config.hpp"
#include "test_helpers.hpp"

namespace {

namespace fs = std::filesystem;
using finetune_test::TempDir;
using Clock = std::chrono::steady_clock;

// 30 optimizer steps: 40 training rows, batches of 4, 3 epochs; SWA from
// step 11 (epoch 1), annealed over 5 steps.
constexpr int64_t kSteps = 30, kSwaStart = 10, kAnneal = 5;

std::string write_csv(const std::string& path) {
  return finetune_test::write_passages_csv(path, 80);
}

std::vector<std::string> train_args(const std::string& csv, const std::string& lr_log) {
  return {"--threads",
          "1",
          "train",
          "--data",
          csv,
          "--folds",
          "2",
          "--fold",
          "0",
          "--epochs",
          "3",
          "--batch-size",
          "4",
          "--max-length",
          "24",
          "--lr-scale",
          "100",
          "--llrd",
          "layerwise",
          "--warmup-steps",
          "3",
          "--reinit-layers",
          "1",
          "--swa-lr",
          "2e-6",
          "--swa-start-epoch",
          "1",
          "--swa-anneal-steps",
          std::to_string(kAnneal),
          "--eval-every",
          "3",
          "--eval-every-from-epoch",
          "0",
          "--save-state-every",
          "1",
          "--lr-log",
          lr_log};
}

// Starts the example with `args`, its output into `log`.
pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  return finetune_test::spawn(finetune_test::kRobertaExe, args, log);
}
using finetune_test::wait_for;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

using finetune_test::part_tensors;
using finetune_test::saved_step;

bool left_temporary_file(const std::string& dir) {
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().find(".tmp-") != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE(
    "train killed with SIGKILL 20+ times and resumed equals the uninterrupted run bit for bit",
    "[roberta][resume][kill]") {
  if (std::string(finetune_test::kRobertaExe).empty() || !fs::exists(finetune_test::kRobertaExe))
    finetune_test::skip("the roberta_regression example is not built");
  TempDir tmp;
  const std::string csv = write_csv(tmp.file("data.csv"));

  // The uninterrupted run, timed: how long until its first state, and in all.
  const std::string whole = tmp.file("whole");
  auto args = train_args(csv, tmp.file("whole_lr.csv"));
  args.insert(args.end(), {"--out", whole});
  const auto start = Clock::now();
  const pid_t pid = spawn(args, tmp.file("whole.log"));
  auto first_state = Clock::duration::zero();
  int status = -1;
  while ((status = wait_for(pid, std::chrono::milliseconds(5))) < 0) {
    if (first_state == Clock::duration::zero() && fs::exists(whole + "/fold0/state.pt"))
      first_state = Clock::now() - start;
  }
  INFO(read_file(tmp.file("whole.log")));
  REQUIRE(status == 0);
  const auto total = Clock::now() - start;
  REQUIRE(saved_step(whole + "/fold0/state.pt") == kSteps);

  // The killed run: start, let it write 0, 1 or 2 new states, kill it at a
  // random moment of the step after (computing, evaluating, writing a
  // checkpoint or the state), resume, kill again, ... until it finishes.
  const std::string killed = tmp.file("killed");
  const std::string state_file = killed + "/fold0/state.pt";
  std::mt19937 rng(20261130);
  const double per_step =
      std::chrono::duration<double>(total - first_state).count() / static_cast<double>(kSteps);
  std::uniform_real_distribution<double> within_step(0.0, 1.5 * per_step);
  std::discrete_distribution<int> new_states({4, 4, 2});
  auto state_time = [&] {
    std::error_code ec;
    return fs::last_write_time(state_file, ec);  // a rename makes a new time
  };
  int kills = 0, mid_write = 0;
  std::vector<int64_t> resumed_at;  // the optimizer step each resume starts from
  bool finished = false;
  for (int attempt = 0; attempt < 150 && !finished; ++attempt) {
    auto run_args = train_args(csv, tmp.file("killed_lr.csv"));
    if (!fs::exists(state_file)) {  // killed before its first state: start again
      run_args.insert(run_args.end(), {"--out", killed});
    } else {
      run_args.insert(run_args.end(), {"--resume", killed});
    }
    const int wanted = new_states(rng) + (attempt % 4 == 3 ? 1 : 0);
    const auto kill_after = std::chrono::duration<double>(within_step(rng));
    auto seen = state_time();
    int writes = 0;
    const pid_t child = spawn(run_args, tmp.file("killed.log"));
    int code = -1;
    auto deadline = Clock::time_point::max();
    const auto give_up = Clock::now() + std::chrono::minutes(5);
    while ((code = wait_for(child, std::chrono::milliseconds(2))) < 0) {
      const auto now_time = state_time();
      if (now_time != seen) {
        seen = now_time;
        ++writes;
      }
      // Every fourth start is killed inside a write: as soon as a temporary
      // file (a checkpoint's or the state's) shows up.
      if (writes >= wanted && attempt % 4 == 3 && fs::exists(killed + "/fold0") &&
          left_temporary_file(killed + "/fold0"))
        break;
      if (writes >= wanted && deadline == Clock::time_point::max())
        deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(kill_after);
      if (Clock::now() >= deadline || Clock::now() >= give_up) break;
    }
    if (code >= 0) {
      if (code != 0)
        fs::copy_file(tmp.file("killed.log"), "/tmp/test_roberta_resume_failed.log",
                      fs::copy_options::overwrite_existing);
      INFO(read_file(tmp.file("killed.log")));
      REQUIRE(code == 0);
      finished = true;
      break;
    }
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    ++kills;
    const std::string fold_dir = killed + "/fold0";
    if (fs::exists(fold_dir) && left_temporary_file(fold_dir)) {
      ++mid_write;
      for (const auto& entry : fs::directory_iterator(fold_dir))  // the kill's leftovers
        if (entry.path().filename().string().find(".tmp-") != std::string::npos)
          fs::remove(entry.path());
    }
    resumed_at.push_back(saved_step(state_file));
  }
  std::ostringstream where;
  for (int64_t s : resumed_at) where << s << " ";
  INFO(kills << " kills, " << mid_write << " inside a checkpoint or state write; resumed at steps "
             << where.str());
  WARN(kills << " kills (" << mid_write << " inside a checkpoint or state write), resumed at steps "
             << where.str());
  REQUIRE(finished);
  CHECK(kills >= 20);
  CHECK(mid_write >= 1);
  auto count = [&](int64_t lo, int64_t hi) {
    return std::count_if(resumed_at.begin(), resumed_at.end(),
                         [&](int64_t s) { return s >= lo && s <= hi; });
  };
  CHECK(count(0, kSwaStart - 1) >= 1);                    // before the SWA start
  CHECK(count(kSwaStart + 1, kSwaStart + kAnneal) >= 1);  // inside the anneal
  CHECK(count(kSwaStart + kAnneal + 1, kSteps) >= 1);     // after it

  const std::string a = whole + "/fold0/state.pt", b = killed + "/fold0/state.pt";
  CHECK(saved_step(b) == kSteps);
  const auto weights_a = part_tensors(a, "model", "t"), weights_b = part_tensors(b, "model", "t");
  REQUIRE(weights_a.size() > 10);
  REQUIRE(weights_a.size() == weights_b.size());
  for (size_t i = 0; i < weights_a.size(); ++i) CHECK(torch::equal(weights_a[i], weights_b[i]));
  const auto swa_a = part_tensors(a, "swa", "swa_average_"),
             swa_b = part_tensors(b, "swa", "swa_average_");
  REQUIRE(swa_a.size() == weights_a.size());
  REQUIRE(swa_a.size() == swa_b.size());
  for (size_t i = 0; i < swa_a.size(); ++i) CHECK(torch::equal(swa_a[i], swa_b[i]));
  CHECK(read_file(killed + "/fold0/history.csv") == read_file(whole + "/fold0/history.csv"));
  CHECK(read_file(tmp.file("killed_lr.csv")) == read_file(tmp.file("whole_lr.csv")));
  CHECK(read_file(killed + "/fold0/best.safetensors") ==
        read_file(whole + "/fold0/best.safetensors"));
  CHECK(read_file(killed + "/fold0/best_swa.safetensors") ==
        read_file(whole + "/fold0/best_swa.safetensors"));

  // Ctrl-C (SIGINT) then --resume: the run stops after its current step,
  // writes its state (here only then and at the end: --save-state-every 0),
  // exits 130, and the resumed run ends like the uninterrupted one.
  {
    const std::string stopped = tmp.file("stopped");
    auto first = train_args(csv, tmp.file("stopped_lr.csv"));
    for (size_t i = 0; i + 1 < first.size(); ++i)
      if (first[i] == "--save-state-every") first[i + 1] = "0";
    auto resume = first;
    first.insert(first.end(), {"--out", stopped});
    resume.insert(resume.end(), {"--resume", stopped});
    const pid_t child = spawn(first, tmp.file("stopped.log"));
    // Interrupt once the first evaluation row is in the history (step 3).
    const std::string history = stopped + "/fold0/history.csv";
    int code = -1;
    const auto give_up = Clock::now() + std::chrono::minutes(5);
    while ((code = wait_for(child, std::chrono::milliseconds(5))) < 0 && Clock::now() < give_up) {
      if (fs::exists(history) && fs::file_size(history) > 60) break;
    }
    REQUIRE(code < 0);  // still running
    ::kill(child, SIGINT);
    code = wait_for(child, std::chrono::minutes(5));
    INFO(read_file(tmp.file("stopped.log")));
    CHECK(code == 130);
    const int64_t at = saved_step(stopped + "/fold0/state.pt");
    CHECK(at > 0);
    CHECK(at < kSteps);
    REQUIRE(wait_for(spawn(resume, tmp.file("resumed.log")), std::chrono::minutes(5)) == 0);
    CHECK(read_file(history) == read_file(whole + "/fold0/history.csv"));
    CHECK(read_file(tmp.file("stopped_lr.csv")) == read_file(tmp.file("whole_lr.csv")));
    const auto weights = part_tensors(stopped + "/fold0/state.pt", "model", "t");
    REQUIRE(weights.size() == weights_a.size());
    for (size_t i = 0; i < weights.size(); ++i) CHECK(torch::equal(weights[i], weights_a[i]));
  }

  // Resuming a finished run retrains nothing.
  {
    const std::string history = read_file(whole + "/fold0/history.csv");
    auto again = train_args(csv, tmp.file("again_lr.csv"));
    again.insert(again.end(), {"--resume", whole});
    REQUIRE(wait_for(spawn(again, tmp.file("again.log")), std::chrono::minutes(5)) == 0);
    CHECK(read_file(whole + "/fold0/history.csv") == history);
    CHECK(read_file(tmp.file("again_lr.csv")) == read_file(tmp.file("whole_lr.csv")));
    CHECK(saved_step(whole + "/fold0/state.pt") == kSteps);
  }
  // --resume refuses a folder without state, and a run with other flags.
  {
    auto none = train_args(csv, tmp.file("x.csv"));
    none.insert(none.end(), {"--resume", tmp.path});
    CHECK(wait_for(spawn(none, tmp.file("none.log")), std::chrono::minutes(2)) != 0);
    CHECK(finetune_test::contains(read_file(tmp.file("none.log")), "no training state there"));
    auto other = train_args(csv, tmp.file("y.csv"));
    for (size_t i = 0; i + 1 < other.size(); ++i)
      if (other[i] == "--epochs") other[i + 1] = "4";
    other.insert(other.end(), {"--resume", whole});
    CHECK(wait_for(spawn(other, tmp.file("other.log")), std::chrono::minutes(2)) != 0);
    CHECK(finetune_test::contains(read_file(tmp.file("other.log")), "other settings"));
  }
}
