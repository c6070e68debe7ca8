// PeriodicEvaluator: schedule, best tracking, early stopping and log lines
// against the article notebook's loop (tests/reference/ref_periodic_evaluator.py),
// checkpoints, history, averaged weights, atomic writes (unique temporary
// names, a full disk, a failing folder fsync), the history's durability
// contract, options. Crash and resume in other processes:
// test_periodic_evaluator_crash.cpp.
#include <finetune/periodic_evaluator.hpp>

#include <torch/torch.h>

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "catch.hpp"
#include "child_process.hpp"
#include "golden.hpp"
#include "test_helpers.hpp"

// String matcher spelled differently by Catch2 v2 and v3.
#if FINETUNE_CATCH2_V3
#define EVAL_CONTAINS(text) Catch::Matchers::ContainsSubstring(text)
#else
#define EVAL_CONTAINS(text) Catch::Matchers::Contains(text)
#endif

namespace fs = std::filesystem;
using finetune::HistoryFormat;
using finetune::MetricMode;
using finetune::PeriodicEvaluator;
using finetune::PeriodicEvaluatorOptions;

namespace {

using finetune_test::TempDir;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(s);
  while (std::getline(in, part, sep)) parts.push_back(part);
  return parts;
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  return names;
}

const auto kIgnoreLog = [](const std::string&) {};

// Fault injection and observation of fsync (see fsync() below).
bool g_fail_folder_fsync = false;
std::vector<std::string> g_fsynced;  // what each successful fsync synced

}  // namespace

// This program's own fsync(): the calls of the finetune headers compiled into
// it bind to this definition ahead of libc's. It records what each call syncs
// and, while g_fail_folder_fsync is set, fails for folders with EIO as a
// failing disk would.
extern "C" int fsync(int fd) {
  using Fn = int (*)(int);
  static const Fn real = reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, "fsync"));
  struct stat st {};
  if (g_fail_folder_fsync && ::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    errno = EIO;
    return -1;
  }
  std::error_code ec;
  g_fsynced.push_back(fs::read_symlink("/proc/self/fd/" + std::to_string(fd), ec).string());
  return real(fd);
}

TEST_CASE("schedule, best, early stopping and printed lines equal the notebook's loop",
          "[periodic_evaluator]") {
  const auto golden = finetune_test::load_golden_json("periodic_evaluator_schedule.json");
  REQUIRE(golden["cases"].size() >= 10);
  // Both APIs: step(epoch, batch, batches_in_epoch) and the counting one,
  // step() per optimizer step and end_epoch() when the data runs out.
  for (const bool counting : {false, true})
    for (const auto& c : golden["cases"]) {
      const std::string name = c["name"];
      INFO("case " << name << (counting ? ", counting API" : ", batch-index API"));
      TempDir dir;
      const bool min = c["mode"] == "min";
      const auto metrics = c["metrics"].get<std::vector<double>>();
      const int64_t epochs = c["epochs"];
      const int64_t batches = c["batches"];
      std::vector<std::string> lines;
      int saves = 0;
      PeriodicEvaluator evaluator(
          PeriodicEvaluatorOptions(dir.path)
              .eval_every(c["eval_every"].get<int64_t>())
              .eval_every_from_epoch(c["from_epoch"].get<int64_t>())
              .patience(c["patience"].get<int64_t>())
              .mode(min ? MetricMode::min : MetricMode::max)
              .log_prefix("FOLD: 0, "),
          [&](const std::string& path) { std::ofstream(path) << ++saves; },
          [&](const std::string& line) { lines.push_back(line); });

      nlohmann::json evaluations = nlohmann::json::array();
      size_t next = 0;
      bool stopped = false;
      // The notebook's loop: stop both loops when the evaluator says so.
      auto metric = [&] {
        REQUIRE(next < metrics.size());
        return metrics[next++];
      };
      auto observe = [&](int64_t epoch, int64_t batch) {
        if (!evaluator.evaluated_last_step()) return;
        const auto& r = evaluator.last_evaluation();
        CHECK(r.epoch == epoch);
        CHECK(r.batch == batch);
        evaluations.push_back({{"epoch", epoch}, {"batch", batch}, {"saved", r.improved}});
      };
      for (int64_t epoch = 0; epoch < epochs && !stopped; ++epoch) {
        for (int64_t i = 0; i < batches && !stopped; ++i) {
          stopped = counting ? evaluator.step(metric) : evaluator.step(epoch, i, batches, metric);
          observe(epoch, i);
        }
        if (counting && !stopped) {
          CHECK(evaluator.steps_in_epoch() == batches);
          stopped = evaluator.end_epoch(metric);
          observe(epoch, batches - 1);
          CHECK(evaluator.epoch() == epoch + 1);
        }
      }
      CHECK(next == metrics.size());
      CHECK(evaluations == c["evaluations"]);
      CHECK(stopped == c["stopped"].get<bool>());
      CHECK(evaluator.should_stop() == c["stopped"].get<bool>());
      CHECK(evaluator.best() == c["best"].get<double>());
      CHECK(evaluator.evaluations_without_improvement() ==
            c["evaluations_without_improvement"].get<int64_t>());
      CHECK(evaluator.num_evaluations() == static_cast<int64_t>(metrics.size()));
      if (min) CHECK(lines == c["lines"].get<std::vector<std::string>>());

      // The checkpoint on disk is the last improvement's; the history has one
      // row per evaluation with the same decisions.
      int improvements = 0;
      for (const auto& e : c["evaluations"]) improvements += e["saved"].get<bool>() ? 1 : 0;
      CHECK(saves == improvements);
      CHECK(read_text(evaluator.best_checkpoint_path()) == std::to_string(improvements));
      const auto history = read_lines(evaluator.history_path());
      REQUIRE(history.size() == metrics.size() + 1);
      CHECK(history[0] == "epoch,batch,step,weights,metric,best,improved");
      for (size_t k = 0; k < metrics.size(); ++k) {
        const auto fields = split(history[k + 1], ',');
        REQUIRE(fields.size() == 7);
        CHECK(std::stoll(fields[0]) == c["evaluations"][k]["epoch"].get<int64_t>());
        CHECK(std::stoll(fields[1]) == c["evaluations"][k]["batch"].get<int64_t>());
        CHECK(std::stoll(fields[2]) == c["evaluations"][k]["epoch"].get<int64_t>() * batches +
                                           c["evaluations"][k]["batch"].get<int64_t>() + 1);
        CHECK(fields[3] == "raw");
        CHECK(std::stod(fields[4]) == metrics[k]);
        CHECK(fields[6] == (c["evaluations"][k]["saved"].get<bool>() ? "1" : "0"));
      }
    }
}

TEST_CASE("is_due follows the notebook's condition", "[periodic_evaluator]") {
  TempDir dir;
  PeriodicEvaluator evaluator(PeriodicEvaluatorOptions(dir.path), nullptr, kIgnoreLog);
  // Defaults are the article's: every 10 batches from epoch 2, patience 50.
  CHECK(evaluator.options().eval_every() == 10);
  CHECK(evaluator.options().eval_every_from_epoch() == 2);
  CHECK(evaluator.options().patience() == 50);
  CHECK(evaluator.options().mode() == MetricMode::min);
  CHECK_FALSE(evaluator.is_due(1, 0, 142));
  CHECK(evaluator.is_due(1, 141, 142));
  CHECK(evaluator.is_due(2, 0, 142));
  CHECK(evaluator.is_due(2, 130, 142));
  CHECK_FALSE(evaluator.is_due(2, 131, 142));
  CHECK(evaluator.is_due(2, 141, 142));
  REQUIRE_THROWS_AS(evaluator.is_due(2, 142, 142), std::invalid_argument);
  REQUIRE_THROWS_WITH(evaluator.step(0, 5, 5, [] { return 0.0; }),
                      EVAL_CONTAINS("batch 5, batches_in_epoch 5"));
  REQUIRE_THROWS_AS(evaluator.step(-1, 0, 5, [] { return 0.0; }), std::invalid_argument);
  REQUIRE_THROWS_AS(evaluator.step(0, 0, 0, [] { return 0.0; }), std::invalid_argument);
  REQUIRE_THROWS_AS(evaluator.step(0, 4, 5, PeriodicEvaluator::EvaluateFn()),
                    std::invalid_argument);
}

TEST_CASE("options are validated and bad folders are reported at construction",
          "[periodic_evaluator]") {
  TempDir dir;
  auto make = [&](const PeriodicEvaluatorOptions& o) {
    PeriodicEvaluator e(o, nullptr, kIgnoreLog);
  };
  REQUIRE_THROWS_WITH(make(PeriodicEvaluatorOptions(dir.path).eval_every(0)),
                      EVAL_CONTAINS("eval_every must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(make(PeriodicEvaluatorOptions(dir.path).patience(-1)),
                      EVAL_CONTAINS("patience must be >= 0, got -1"));
  REQUIRE_THROWS_WITH(make(PeriodicEvaluatorOptions(dir.path).eval_every_from_epoch(-2)),
                      EVAL_CONTAINS("eval_every_from_epoch must be >= 0, got -2"));
  REQUIRE_THROWS_WITH(make(PeriodicEvaluatorOptions(dir.path).checkpoint_name("a/b.pt")),
                      EVAL_CONTAINS("checkpoint_name"));
  REQUIRE_THROWS_WITH(make(PeriodicEvaluatorOptions(dir.path).averaged_checkpoint_name("best.pt")),
                      EVAL_CONTAINS("both 'best.pt'"));
  REQUIRE_THROWS_WITH(make(PeriodicEvaluatorOptions("")), EVAL_CONTAINS("checkpoint_dir"));

  const std::string missing = dir.file("no_such_folder");
  REQUIRE_THROWS_AS(make(PeriodicEvaluatorOptions(missing)), std::invalid_argument);
  REQUIRE_THROWS_WITH(make(PeriodicEvaluatorOptions(missing)),
                      EVAL_CONTAINS("'" + missing + "' does not exist"));
  const std::string file = dir.file("plain_file");
  std::ofstream(file) << "x";
  REQUIRE_THROWS_WITH(make(PeriodicEvaluatorOptions(file)),
                      EVAL_CONTAINS("'" + file + "' is not a folder"));

  // Unwritable: a read-only folder; root ignores permissions, then /sys.
  const std::string locked = dir.file("locked");
  fs::create_directory(locked);
  fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec);
  const bool root_writes = ::access(locked.c_str(), W_OK) == 0;
  const std::string unwritable = root_writes ? std::string("/sys") : locked;
  REQUIRE_THROWS_WITH(make(PeriodicEvaluatorOptions(unwritable)),
                      EVAL_CONTAINS("'" + unwritable + "' is not writable"));
  // Nothing left behind by the probe.
  make(PeriodicEvaluatorOptions(dir.path));
  CHECK(files_in(dir.path).size() == 2);  // plain_file, locked
}

TEST_CASE("best tracking: strict improvement, NaN never improves, both directions",
          "[periodic_evaluator]") {
  TempDir dir;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto run = [&](MetricMode mode, const std::vector<double>& values) {
    PeriodicEvaluator evaluator(PeriodicEvaluatorOptions(dir.path)
                                    .eval_every(1)
                                    .eval_every_from_epoch(0)
                                    .patience(100)
                                    .mode(mode),
                                nullptr, kIgnoreLog);
    std::vector<bool> improved;
    for (size_t i = 0; i < values.size(); ++i) {
      evaluator.step(0, static_cast<int64_t>(i), static_cast<int64_t>(values.size()),
                     [&] { return values[i]; });
      improved.push_back(evaluator.last_evaluation().improved);
    }
    return std::make_pair(improved, evaluator.best());
  };
  auto min_run = run(MetricMode::min, {nan, 0.7, 0.7, 0.6, nan, 0.65, 0.59});
  CHECK(min_run.first == std::vector<bool>{false, true, false, true, false, false, true});
  CHECK(min_run.second == 0.59);
  auto max_run = run(MetricMode::max, {0.1, 0.1, nan, 0.3, 0.2, 0.30000001});
  CHECK(max_run.first == std::vector<bool>{true, false, false, true, false, true});
  CHECK(max_run.second == 0.30000001);
  // Before any improvement best() is the worst value of the mode.
  PeriodicEvaluator fresh(PeriodicEvaluatorOptions(dir.path).mode(MetricMode::max), nullptr,
                          kIgnoreLog);
  CHECK(fresh.best() == -std::numeric_limits<double>::infinity());
}

TEST_CASE("after early stopping step() keeps returning true and evaluates nothing",
          "[periodic_evaluator]") {
  TempDir dir;
  std::vector<std::string> lines;
  PeriodicEvaluator evaluator(
      PeriodicEvaluatorOptions(dir.path).eval_every(1).eval_every_from_epoch(0).patience(2),
      nullptr, [&](const std::string& l) { lines.push_back(l); });
  int calls = 0;
  auto flat = [&] {
    ++calls;
    return 1.0;
  };
  CHECK_FALSE(evaluator.step(0, 0, 10, flat));  // improves (first value)
  CHECK_FALSE(evaluator.step(0, 1, 10, flat));  // 1 without improvement
  CHECK_FALSE(evaluator.step(0, 2, 10, flat));  // 2 = patience, not more
  CHECK(evaluator.step(0, 3, 10, flat));        // 3 > patience: stop
  CHECK(lines.back() == "Early stopping triggered!");
  CHECK(evaluator.step(0, 4, 10, flat));
  CHECK(evaluator.step(1, 0, 10, flat));
  CHECK(calls == 4);
  CHECK(evaluator.should_stop());
  CHECK(evaluator.global_step() == 4);
  CHECK_FALSE(evaluator.evaluated_last_step());
}

TEST_CASE("checkpoints of a module load back with torch::load and hold the best weights",
          "[periodic_evaluator]") {
  TempDir dir;
  torch::manual_seed(0);
  torch::nn::Linear model(4, 3);
  PeriodicEvaluator evaluator(
      PeriodicEvaluatorOptions(dir.path).eval_every(1).eval_every_from_epoch(0), *model,
      kIgnoreLog);
  const std::vector<double> metric = {0.9, 0.8, 0.85, 0.7, 0.75};
  std::vector<torch::Tensor> weights;
  for (int64_t i = 0; i < 5; ++i) {
    {
      torch::NoGradGuard no_grad;
      model->weight.add_(0.5);
    }
    weights.push_back(model->weight.clone());
    evaluator.step(0, i, 5, [&] { return metric[static_cast<size_t>(i)]; });
  }
  torch::nn::Linear loaded(4, 3);
  torch::load(loaded, evaluator.best_checkpoint_path());
  CHECK(torch::equal(loaded->weight, weights[3]));  // 0.7 at batch 3 is the best
  CHECK_FALSE(torch::equal(loaded->weight, model->weight));
  // No temporary file is left behind.
  for (const auto& name : files_in(dir.path)) CHECK(name.find(".tmp") == std::string::npos);
}

TEST_CASE("averaged weights are evaluated and saved on their own best", "[periodic_evaluator]") {
  TempDir dir;
  std::vector<std::string> lines;
  PeriodicEvaluator evaluator(
      PeriodicEvaluatorOptions(dir.path)
          .eval_every(2)
          .eval_every_from_epoch(0)
          .patience(1)
          .history_format(HistoryFormat::jsonl),
      [](const std::string& p) { torch::save(torch::full({2}, 1.0), p); },
      [&](const std::string& l) { lines.push_back(l); });
  const std::vector<double> raw = {0.8, 0.9, 0.95, 0.97};
  const std::vector<double> averaged = {0.85, 0.6, 0.7, 0.5};
  size_t r = 0, a = 0;
  auto save_averaged = [&](const std::string& p) {
    torch::save(torch::full({2}, static_cast<double>(a)), p);  // a: evaluations so far
  };
  bool stopped = false;
  for (int64_t i = 0; i < 8 && !stopped; ++i) {
    stopped = evaluator.step(
        0, i, 8, [&] { return raw[r++]; }, [&] { return averaged[a++]; }, save_averaged);
  }
  // Raw: improves once, then 0.9, 0.95 make 2 > patience 1: stop at batch 4,
  // averaged improvements (0.6 at batch 2) do not reset the raw count.
  CHECK(stopped);
  CHECK(r == 3);
  CHECK(a == 3);
  CHECK(evaluator.best() == 0.8);
  CHECK(evaluator.best_averaged() == 0.6);
  torch::Tensor swa;
  torch::load(swa, evaluator.best_averaged_checkpoint_path());
  CHECK(torch::equal(swa, torch::full({2}, 2.0)));  // saved during the 2nd averaged evaluation
  CHECK(lines[1] == "Epoch: 0, Batch 0, RMSE (averaged) = 0.85, checkpoint saved.");
  CHECK(lines[3] == "Epoch: 0, Batch 2, RMSE (averaged) = 0.6, checkpoint saved.");
  CHECK(lines[5] == "Epoch: 0, Batch 4, RMSE (averaged) = 0.7");

  const auto history = read_lines(evaluator.history_path());
  REQUIRE(history.size() == 6);
  const auto row = nlohmann::json::parse(history[3]);
  CHECK(row["epoch"] == 0);
  CHECK(row["batch"] == 2);
  CHECK(row["step"] == 3);
  CHECK(row["weights"] == "averaged");
  CHECK(row["metric"].get<double>() == 0.6);
  CHECK(row["best"].get<double>() == 0.6);
  CHECK(row["improved"] == true);
  const auto raw_row = nlohmann::json::parse(history[4]);
  CHECK(raw_row["weights"] == "raw");
  CHECK(raw_row["best"].get<double>() == 0.8);
  CHECK(raw_row["improved"] == false);
}

TEST_CASE("a failing save leaves the best and the old checkpoint unchanged",
          "[periodic_evaluator]") {
  TempDir dir;
  bool fail = false;
  PeriodicEvaluator evaluator(
      PeriodicEvaluatorOptions(dir.path).eval_every(1).eval_every_from_epoch(0),
      [&](const std::string& p) {
        std::ofstream(p) << "partial";
        if (fail) throw std::runtime_error("disk full");
        std::ofstream(p) << "good";
      },
      kIgnoreLog);
  evaluator.step(0, 0, 3, [] { return 0.5; });
  fail = true;
  REQUIRE_THROWS_WITH(evaluator.step(0, 1, 3, [] { return 0.4; }), "disk full");
  CHECK(evaluator.best() == 0.5);
  CHECK(read_text(evaluator.best_checkpoint_path()) == "good");
  CHECK(files_in(dir.path).size() == 2);  // best.pt and history.csv: no temporary left
}

TEST_CASE("atomic_write_file replaces whole files or nothing", "[periodic_evaluator]") {
  TempDir dir;
  const std::string path = dir.file("f.bin");
  finetune::atomic_write_file(path, [](const std::string& p) { std::ofstream(p) << "one"; });
  CHECK(read_text(path) == "one");
  finetune::atomic_write_file(path, [](const std::string& p) { std::ofstream(p) << "two"; });
  CHECK(read_text(path) == "two");
  REQUIRE_THROWS_AS(finetune::atomic_write_file(path,
                                                [](const std::string& p) {
                                                  std::ofstream(p) << "torn";
                                                  throw std::runtime_error("boom");
                                                }),
                    std::runtime_error);
  CHECK(read_text(path) == "two");
  // A writer that writes nothing is an error, not an empty file.
  REQUIRE_THROWS_WITH(finetune::atomic_write_file(path, [](const std::string&) {}),
                      EVAL_CONTAINS("f.bin.tmp-"));
  CHECK(read_text(path) == "two");
  CHECK(files_in(dir.path) == std::vector<std::string>{"f.bin"});
  REQUIRE_THROWS_AS(finetune::atomic_write_file("", [](const std::string&) {}),
                    std::invalid_argument);
  REQUIRE_THROWS_AS(finetune::atomic_write_file(path, nullptr), std::invalid_argument);
}

TEST_CASE("temporary files have unique names: another writer's is never touched",
          "[periodic_evaluator]") {
  TempDir dir;
  const std::string path = dir.file("f.bin");
  // What another process with our pid (another host or container sharing the
  // folder) may be writing under the old `<path>.tmp.<pid>` scheme.
  const std::string other = path + ".tmp." + std::to_string(::getpid());
  std::ofstream(other) << "another writer's file";
  std::vector<std::string> names;
  for (const char* text : {"one", "two"}) {
    finetune::atomic_write_file(path, [&](const std::string& p) {
      names.push_back(p);
      std::ofstream(p) << text;
    });
  }
  finetune::atomic_write_text(path, "three");
  CHECK(read_text(path) == "three");
  CHECK(read_text(other) == "another writer's file");
  REQUIRE(names.size() == 2);
  CHECK(names[0] != names[1]);
  for (const auto& name : names) {
    CHECK(fs::path(name).parent_path() == fs::path(dir.path));  // same folder: rename is atomic
    CHECK(fs::path(name).filename().string().rfind("f.bin.tmp-", 0) == 0);
  }
  std::vector<std::string> files = files_in(dir.path);
  std::sort(files.begin(), files.end());
  CHECK(files == std::vector<std::string>{"f.bin", fs::path(other).filename().string()});
  // The permissions of a plain new file (0666 less the umask), not mkstemp's 0600.
  const mode_t mask = ::umask(022);
  ::umask(mask);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == (0666 & ~mask));
}

TEST_CASE("a full disk leaves the old file whole and names the file", "[periodic_evaluator]") {
  TempDir dir;
  const std::string path = dir.file("state.txt");
  finetune::atomic_write_text(path, "the good old contents\n");
  const std::string big(64 * 1024, 'x');
  SECTION("atomic_write_text checks every write") {
    const std::string what = finetune_test::what_under_file_size_limit(
        4096, [&] { finetune::atomic_write_text(path, big); });
    CHECK_THAT(what, EVAL_CONTAINS("'" + path + "'"));
    CHECK_THAT(what, EVAL_CONTAINS(std::strerror(EFBIG)));
  }
  SECTION("atomic_write_file with a stream the writer checks") {
    const std::string what = finetune_test::what_under_file_size_limit(4096, [&] {
      finetune::atomic_write_file(path, [&](const std::string& p) {
        std::ofstream out(p, std::ios::binary);
        out << big;
        out.close();
        if (!out) throw std::runtime_error("writing '" + p + "' failed");
      });
    });
    CHECK_THAT(what, EVAL_CONTAINS(path + ".tmp-"));
  }
  CHECK(read_text(path) == "the good old contents\n");
  CHECK(files_in(dir.path) == std::vector<std::string>{"state.txt"});  // no temporary left
}

TEST_CASE("a full disk while saving a module's checkpoint: an error, the old checkpoint stays",
          "[periodic_evaluator]") {
  // LibTorch's own file writer ends the process here (it throws from a
  // destructor); module_saver serializes in memory and checks its writes.
  TempDir dir;
  torch::manual_seed(0);
  torch::nn::Linear model(128, 128);  // made before fork(): 64 KiB of weights
  PeriodicEvaluator evaluator(
      PeriodicEvaluatorOptions(dir.path).eval_every(1).eval_every_from_epoch(0), *model,
      kIgnoreLog);
  {
    torch::NoGradGuard no_grad;
    model->weight.zero_();
  }
  evaluator.step(0, 0, 3, [] { return 0.9; });  // checkpoint 1: zero weights
  const std::string before = read_text(evaluator.best_checkpoint_path());
  {
    torch::NoGradGuard no_grad;
    model->weight.fill_(1.0);
  }
  const std::string what = finetune_test::what_under_file_size_limit(
      32 * 1024, [&] { evaluator.step(0, 1, 3, [] { return 0.8; }); });
  CHECK_THAT(what, EVAL_CONTAINS(evaluator.best_checkpoint_path() + ".tmp-"));
  CHECK_THAT(what, EVAL_CONTAINS(std::strerror(EFBIG)));
  CHECK(read_text(evaluator.best_checkpoint_path()) == before);
  std::vector<std::string> files = files_in(dir.path);
  std::sort(files.begin(), files.end());
  CHECK(files == std::vector<std::string>{"best.pt", "history.csv"});
}

TEST_CASE("a failing folder fsync: the file is replaced, the error says so",
          "[periodic_evaluator]") {
  TempDir dir;
  const std::string path = dir.file("f.txt");
  finetune::atomic_write_text(path, "old");
  g_fail_folder_fsync = true;
  std::string what;
  try {
    finetune::atomic_write_text(path, "new");
  } catch (const finetune::FolderSyncError& e) {
    what = e.what();
  }
  g_fail_folder_fsync = false;
  CHECK_THAT(what, EVAL_CONTAINS("'" + path + "' was replaced"));
  CHECK(read_text(path) == "new");
}

TEST_CASE("a failing folder fsync after the checkpoint's rename leaves a coherent state",
          "[periodic_evaluator]") {
  TempDir dir;
  int64_t current = 0;
  std::vector<std::string> lines;
  PeriodicEvaluator evaluator(
      PeriodicEvaluatorOptions(dir.path).eval_every(1).eval_every_from_epoch(0).patience(5),
      [&](const std::string& p) { std::ofstream(p) << "checkpoint " << current; },
      [&](const std::string& line) { lines.push_back(line); });
  current = 1;
  evaluator.step(0, 0, 5, [] { return 0.9; });
  current = 2;
  g_fail_folder_fsync = true;
  // The checkpoint is renamed into place, then the folder fsync fails: the
  // step completes as for a save (the state follows the file on disk) and
  // reports the error at its end.
  REQUIRE_THROWS_AS(evaluator.step(0, 1, 5, [] { return 0.8; }), std::runtime_error);
  g_fail_folder_fsync = false;
  CHECK(read_text(evaluator.best_checkpoint_path()) == "checkpoint 2");
  CHECK(evaluator.best() == 0.8);
  CHECK(evaluator.num_evaluations() == 2);
  CHECK(evaluator.evaluations_without_improvement() == 0);
  CHECK(evaluator.global_step() == 2);
  const auto rows = read_lines(evaluator.history_path());
  REQUIRE(rows.size() == 3);
  CHECK(rows[2] == "0,1,2,raw,0.80000000000000004,0.80000000000000004,1");
  REQUIRE(lines.size() == 2);
  CHECK_THAT(lines[1], EVAL_CONTAINS("checkpoint saved."));
  // And it goes on: a worse value is no improvement over the new best.
  current = 3;
  evaluator.step(0, 2, 5, [] { return 0.85; });
  CHECK(evaluator.best() == 0.8);
  CHECK(read_text(evaluator.best_checkpoint_path()) == "checkpoint 2");
}

TEST_CASE("every history row is fsynced before step() returns", "[periodic_evaluator]") {
  TempDir dir;
  PeriodicEvaluator evaluator(
      PeriodicEvaluatorOptions(dir.path).eval_every(2).eval_every_from_epoch(0).patience(100),
      PeriodicEvaluator::SaveFn(), kIgnoreLog);
  const std::string history = fs::canonical(dir.path).string() + "/history.csv";
  int64_t evaluations = 0;
  for (int64_t i = 0; i < 7; ++i) {
    g_fsynced.clear();
    evaluator.step(0, i, 7, [&] { return 1.0 - 0.01 * static_cast<double>(i); });
    const bool evaluated = evaluator.evaluated_last_step();
    evaluations += evaluated ? 1 : 0;
    INFO("batch " << i);
    CHECK(std::count(g_fsynced.begin(), g_fsynced.end(), history) == (evaluated ? 1 : 0));
    CHECK(static_cast<int64_t>(read_lines(evaluator.history_path()).size()) == evaluations + 1);
  }
  CHECK(evaluations == evaluator.num_evaluations());
  CHECK(evaluations >= 2);
}

TEST_CASE("log lines print the metric like Python's round(x, 4)", "[periodic_evaluator]") {
  // Expected strings are what Python 3.11 prints for round(x, 4).
  CHECK(finetune::format_metric_like_python_round4(0.60101) == "0.601");
  CHECK(finetune::format_metric_like_python_round4(0.56362) == "0.5636");
  CHECK(finetune::format_metric_like_python_round4(0.59998) == "0.6");
  CHECK(finetune::format_metric_like_python_round4(2.0) == "2.0");
  CHECK(finetune::format_metric_like_python_round4(-0.00001) == "-0.0");
  CHECK(finetune::format_metric_like_python_round4(std::nan("")) == "nan");
  // Exact binary ties round half to even, as Python does: 0.0312, 0.0938.
  CHECK(finetune::format_metric_like_python_round4(0.03125) == "0.0312");
  CHECK(finetune::format_metric_like_python_round4(0.09375) == "0.0938");
}

TEST_CASE("state save/load: a fresh evaluator continues exactly like an uninterrupted one",
          "[periodic_evaluator]") {
  const int64_t batches = 9;
  const int64_t total = 6 * batches;
  auto metric = [](int64_t s) {
    return 0.5 + 0.3 * std::exp(-s / 12.0) + 0.05 * std::sin(1.9 * s);
  };
  int64_t current = 0;
  auto options = [](const std::string& d) {
    return PeriodicEvaluatorOptions(d).eval_every(3).eval_every_from_epoch(1).patience(4);
  };
  auto saver = [&](const std::string& p) {
    torch::save(torch::full({3}, static_cast<double>(current), torch::kDouble), p);
  };
  auto run = [&](PeriodicEvaluator& e, int64_t first, int64_t last) {
    for (int64_t s = first; s <= last; ++s) {
      current = s;
      if (e.step((s - 1) / batches, (s - 1) % batches, batches, [&] { return metric(s); })) return;
    }
  };
  TempDir whole;
  PeriodicEvaluator uninterrupted(options(whole.path), saver, kIgnoreLog);
  run(uninterrupted, 1, total);
  const std::string whole_history = read_text(uninterrupted.history_path());
  torch::Tensor whole_best;
  torch::load(whole_best, uninterrupted.best_checkpoint_path());
  REQUIRE(uninterrupted.should_stop());  // the scenario reaches early stopping, at step 34
  REQUIRE(uninterrupted.global_step() == 34);

  for (int64_t k : {0, 1, 9, 10, 22, 30, 34, 40}) {
    INFO("state saved after step " << k);
    TempDir dir;
    const std::string state = dir.file("state.pt");
    {
      PeriodicEvaluator first(options(dir.path), saver, kIgnoreLog);
      run(first, 1, k);
      finetune::atomic_write_file(state, [&](const std::string& p) { torch::save(first, p); });
      run(first, k + 1, k + 8);  // then "crashes": these rows must not stay
    }
    // ... in the middle of a row: a torn last row after the saved position.
    std::ofstream(dir.file("history.csv"), std::ios::app) << "5,3,48,raw,0.61";
    PeriodicEvaluator resumed(options(dir.path), saver, kIgnoreLog);
    torch::load(resumed, state);
    CHECK(resumed.global_step() == std::min<int64_t>(k, 34));  // no steps after the stop
    run(resumed, resumed.global_step() + 1, total);
    CHECK(read_text(resumed.history_path()) == whole_history);
    CHECK(resumed.best() == uninterrupted.best());
    CHECK(resumed.global_step() == uninterrupted.global_step());
    CHECK(resumed.num_evaluations() == uninterrupted.num_evaluations());
    CHECK(resumed.should_stop() == uninterrupted.should_stop());
    CHECK(resumed.evaluations_without_improvement() ==
          uninterrupted.evaluations_without_improvement());
    torch::Tensor best;
    torch::load(best, resumed.best_checkpoint_path());
    CHECK(torch::equal(best, whole_best));
  }

  SECTION("load rejects a wrong mode, a missing key and a cut history") {
    TempDir dir;
    const std::string state = dir.file("state.pt");
    PeriodicEvaluator a(options(dir.path), saver, kIgnoreLog);
    run(a, 1, 20);
    torch::save(a, state);
    PeriodicEvaluator max_mode(options(dir.path).mode(MetricMode::max), saver, kIgnoreLog);
    REQUIRE_THROWS_WITH(torch::load(max_mode, state), EVAL_CONTAINS("mode min"));
    // A short tail: rows the state counts are gone (rows are fsynced before
    // step() returns, so no crash or power loss does this). Whole rows or
    // half of the last one: rejected, naming the file.
    const auto saved_size = static_cast<int64_t>(fs::file_size(a.history_path()));
    fs::resize_file(a.history_path(), static_cast<uintmax_t>(saved_size - 5));
    PeriodicEvaluator torn(options(dir.path), saver, kIgnoreLog);
    REQUIRE_THROWS_WITH(torch::load(torn, state),
                        EVAL_CONTAINS("history '" + a.history_path() + "' has " +
                                      std::to_string(saved_size - 5) + " bytes"));
    fs::resize_file(a.history_path(), 10);
    PeriodicEvaluator b(options(dir.path), saver, kIgnoreLog);
    REQUIRE_THROWS_WITH(torch::load(b, state), EVAL_CONTAINS("has 10 bytes"));
    torch::serialize::OutputArchive empty;
    empty.write("other", torch::zeros({1}));
    empty.save_to(dir.file("empty.pt"));
    REQUIRE_THROWS_WITH(torch::load(b, dir.file("empty.pt")),
                        EVAL_CONTAINS("'periodic_evaluator_mode' missing"));
  }
}

// The fuzzer's findings (tests/fuzz/corpus/evaluator_state/crash-*): a key
// that is not one element of the saved dtype, or a count out of range, is
// std::invalid_argument naming the key, and the evaluator is unchanged.
TEST_CASE("load: malformed state values are rejected by key, nothing changes",
          "[periodic_evaluator]") {
  TempDir dir;
  auto options = PeriodicEvaluatorOptions(dir.path).eval_every(1).eval_every_from_epoch(0);
  auto saver = [](const std::string& p) { torch::save(torch::zeros({1}), p); };
  PeriodicEvaluator source(options, saver, kIgnoreLog);
  for (int64_t s = 0; s < 3; ++s) source.step(0, s, 3, [s] { return 1.0 / (1.0 + s); });
  const std::vector<std::string> keys = {"mode",           "best",
                                         "best_averaged",  "bad_evaluations",
                                         "global_step",    "num_evaluations",
                                         "history_rows",   "history_bytes",
                                         "last_epoch",     "last_batch",
                                         "stopped",        "epoch",
                                         "steps_in_epoch", "step_evaluated"};
  auto archive_with = [&](const std::string& key, const torch::Tensor& value) {
    torch::serialize::OutputArchive saved;
    source.save(saved);
    std::stringstream first;
    saved.save_to(first);
    torch::serialize::InputArchive in;
    in.load_from(first);
    torch::serialize::OutputArchive out;
    for (const auto& k : keys) {
      torch::Tensor t;
      REQUIRE(in.try_read("periodic_evaluator_" + k, t));
      out.write("periodic_evaluator_" + k, k == key ? value : t);
    }
    std::stringstream second;
    out.save_to(second);
    auto result = std::make_unique<torch::serialize::InputArchive>();
    result->load_from(second);
    return result;
  };
  const std::vector<std::tuple<std::string, torch::Tensor, std::string>> cases = {
      {"mode", torch::zeros({0}, torch::kLong), "holds 0 elements, not 1"},
      {"global_step", torch::zeros({3}, torch::kLong), "holds 3 elements, not 1"},
      {"global_step", torch::full({1}, 1e30, torch::kDouble), "is not an int64 tensor"},
      {"best", torch::full({1}, 2, torch::kLong), "is not a floating-point tensor"},
      {"best", torch::full({1}, std::nan(""), torch::kDouble), "is NaN"},
      {"history_bytes", torch::full({1}, -5, torch::kLong), "is -5, outside [0, "},
      {"history_rows", torch::full({1}, -1, torch::kLong), "is -1, outside [0, "},
      {"num_evaluations", torch::full({1}, -2, torch::kLong), "is -2, outside [0, "},
      {"bad_evaluations", torch::full({1}, -3, torch::kLong), "is -3, outside [0, "},
      {"last_batch", torch::full({1}, -2, torch::kLong), "is -2, outside [-1, "},
      {"mode", torch::full({1}, 7, torch::kLong), "is 7, outside [0, 1]"},
      {"stopped", torch::full({1}, 2, torch::kLong), "is 2, outside [0, 1]"},
      {"epoch", torch::full({1}, -1, torch::kLong), "is -1, outside [0, "},
      // Found by fuzz_evaluator_state (corpus crash-last-batch-overflow): a
      // count at INT64_MAX overflowed when the run went on.
      {"last_batch", torch::full({1}, std::numeric_limits<int64_t>::max(), torch::kLong),
       "is 9223372036854775807, outside [-1, 4611686018427387904]"},
      {"steps_in_epoch", torch::full({1}, 0.5, torch::kDouble), "is not an int64 tensor"},
      {"step_evaluated", torch::full({1}, 3, torch::kLong), "is 3, outside [0, 1]"},
  };
  for (const auto& [key, value, message] : cases) {
    INFO(key << ": " << message);
    TempDir other;
    PeriodicEvaluator target(PeriodicEvaluatorOptions(other.path).eval_every(1), saver, kIgnoreLog);
    auto archive = archive_with(key, value);
    REQUIRE_THROWS_WITH(target.load(*archive),
                        EVAL_CONTAINS("key 'periodic_evaluator_" + key + "' " + message));
    CHECK(target.global_step() == 0);
    CHECK(target.num_evaluations() == 0);
  }
}

TEST_CASE("counting API: optimizer steps, not batches; epoch ends come from the caller",
          "[periodic_evaluator][accumulation]") {
  // Gradient accumulation over K = 3 batches of a loader whose length the
  // loop does not know: the evaluator sees optimizer steps only. Its
  // evaluations are those of the batch-index API over steps per epoch.
  const int64_t K = 3, batches_per_epoch = 20, epochs = 4;
  const int64_t steps_per_epoch = (batches_per_epoch + K - 1) / K;  // last step takes 2 batches
  auto options = [](const std::string& d) {
    return PeriodicEvaluatorOptions(d).eval_every(2).eval_every_from_epoch(1).patience(100);
  };
  auto metric_at = [](int64_t global_step) { return 1.0 / (1.0 + 0.1 * global_step); };
  TempDir by_index_dir, counting_dir;
  PeriodicEvaluator by_index(options(by_index_dir.path), PeriodicEvaluator::SaveFn(), kIgnoreLog);
  PeriodicEvaluator counting(options(counting_dir.path), PeriodicEvaluator::SaveFn(), kIgnoreLog);
  for (int64_t epoch = 0; epoch < epochs; ++epoch) {
    for (int64_t s = 0; s < steps_per_epoch; ++s) {
      by_index.step(epoch, s, steps_per_epoch, [&] { return metric_at(by_index.global_step()); });
    }
    int64_t batch = 0;
    for (; batch < batches_per_epoch; ++batch) {  // the loader, one batch at a time
      const bool boundary = (batch + 1) % K == 0;
      if (boundary) counting.step([&] { return metric_at(counting.global_step()); });
    }
    if (batch % K != 0) counting.step([&] { return metric_at(counting.global_step()); });
    CHECK(counting.steps_in_epoch() == steps_per_epoch);
    counting.end_epoch([&] { return metric_at(counting.global_step()); });
  }
  CHECK(counting.global_step() == epochs * steps_per_epoch);
  CHECK(counting.num_evaluations() == by_index.num_evaluations());
  CHECK(read_text(counting.history_path()) == read_text(by_index.history_path()));

  SECTION("a state saved between a step and end_epoch resumes exactly") {
    for (int64_t stop_after : {1, 6, 7, 8, 13}) {  // global steps; 7 ends epoch 0
      INFO("saved after step " << stop_after);
      TempDir dir;
      std::string state;
      {
        PeriodicEvaluator first(options(dir.path), PeriodicEvaluator::SaveFn(), kIgnoreLog);
        while (first.global_step() < stop_after) {
          first.step([&] { return metric_at(first.global_step()); });
          if (first.steps_in_epoch() == steps_per_epoch && first.global_step() < stop_after)
            first.end_epoch([&] { return metric_at(first.global_step()); });
        }
        std::ostringstream bytes;
        torch::save(first, bytes);
        state = bytes.str();
      }
      PeriodicEvaluator resumed(options(dir.path), PeriodicEvaluator::SaveFn(), kIgnoreLog);
      std::istringstream in(state);
      torch::load(resumed, in);
      while (resumed.epoch() < epochs) {
        if (resumed.steps_in_epoch() == steps_per_epoch) {
          resumed.end_epoch([&] { return metric_at(resumed.global_step()); });
        } else {
          resumed.step([&] { return metric_at(resumed.global_step()); });
        }
      }
      CHECK(read_text(resumed.history_path()) == read_text(by_index.history_path()));
    }
  }
  SECTION("an epoch without a step evaluates nothing at its end") {
    TempDir dir;
    PeriodicEvaluator e(options(dir.path), PeriodicEvaluator::SaveFn(), kIgnoreLog);
    CHECK_FALSE(e.end_epoch([] { return 1.0; }));
    CHECK_FALSE(e.evaluated_last_step());
    CHECK(e.epoch() == 1);
    CHECK(e.num_evaluations() == 0);
  }
}

// Data parallelism (docs/distributed.md): every rank but one runs an
// evaluator with writer(false), fed the same metric values.
TEST_CASE("writer(false): the writer's decisions and state, and no file at all",
          "[periodic_evaluator]") {
  const int64_t batches = 9;
  auto metric = [](int64_t s) {
    return 0.5 + 0.3 * std::exp(-s / 12.0) + 0.05 * std::sin(1.9 * s);
  };
  auto options = [](const std::string& d) {
    return PeriodicEvaluatorOptions(d).eval_every(3).eval_every_from_epoch(1).patience(4);
  };
  auto saver = [](const std::string& p) { torch::save(torch::zeros({1}), p); };
  TempDir writes, silent;
  std::vector<std::string> writer_log, silent_log;
  PeriodicEvaluator writer(options(writes.path), saver,
                           [&](const std::string& l) { writer_log.push_back(l); });
  PeriodicEvaluator other(options(silent.path).writer(false), saver,
                          [&](const std::string& l) { silent_log.push_back(l); });
  for (int64_t s = 1; s <= 6 * batches; ++s) {
    const bool a =
        writer.step((s - 1) / batches, (s - 1) % batches, batches, [&] { return metric(s); });
    const bool b =
        other.step((s - 1) / batches, (s - 1) % batches, batches, [&] { return metric(s); });
    REQUIRE(a == b);
    if (a) break;
  }
  REQUIRE(writer.should_stop());
  CHECK(other.best() == writer.best());
  CHECK(other.global_step() == writer.global_step());
  CHECK(other.num_evaluations() == writer.num_evaluations());
  CHECK(files_in(silent.path).empty());  // no checkpoint, no history, no probe left
  CHECK(fs::exists(writer.best_checkpoint_path()));
  // The same lines, except that nothing was saved.
  REQUIRE(silent_log.size() == writer_log.size());
  for (std::size_t i = 0; i < writer_log.size(); ++i) {
    std::string expected = writer_log[i];
    const std::string saved = ", checkpoint saved.";
    if (expected.size() > saved.size() &&
        expected.compare(expected.size() - saved.size(), saved.size(), saved) == 0)
      expected.resize(expected.size() - saved.size());
    CHECK(silent_log[i] == expected);
  }
  // The same state: the writer's saved state loads into a silent evaluator
  // (no history file to check or cut) and saves back byte for byte.
  std::ostringstream a_bytes, b_bytes;
  torch::serialize::OutputArchive a_archive, b_archive;
  writer.save(a_archive);
  other.save(b_archive);
  a_archive.save_to(a_bytes);
  b_archive.save_to(b_bytes);
  torch::serialize::InputArchive a_in, b_in;
  std::istringstream a_stream(a_bytes.str()), b_stream(b_bytes.str());
  a_in.load_from(a_stream);
  b_in.load_from(b_stream);
  for (const auto& key : a_in.keys()) {
    torch::Tensor x, y;
    a_in.read(key, x);
    b_in.read(key, y);
    INFO(key);
    CHECK(torch::equal(x, y));
  }
  PeriodicEvaluator resumed(options(silent.path).writer(false), saver, kIgnoreLog);
  const std::string state = writes.file("state.pt");
  torch::save(writer, state);
  torch::load(resumed, state);
  CHECK(resumed.best() == writer.best());
  CHECK(files_in(silent.path).empty());
  // A folder that does not exist is fine for a non-writer: it never looks.
  CHECK_NOTHROW(
      PeriodicEvaluator(options(silent.file("missing")).writer(false), saver, kIgnoreLog));
  CHECK_THROWS_AS(PeriodicEvaluator(options(silent.file("missing")), saver, kIgnoreLog),
                  std::invalid_argument);
}
