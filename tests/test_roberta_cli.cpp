// The example's binary end to end: the `tokenize`, `pretrain` and `demo`
// subcommands and the `train` / `table` flags that tests/test_roberta_train.cpp
// does not run, each against an oracle's value:
//  - tokenize: Hugging Face's RobertaTokenizerFast (golden cli_tokenize_cases.json,
//    tests/reference/ref_cli_tokenize.py);
//  - pretrain: the output folder loads in transformers as a RobertaForMaskedLM
//    with its tokenizer (test-time check_cli_pretrain.py), its log's learning
//    rates are HF's warm-up/linear schedule (golden cli_pretrain_cases.json);
//  - train / table: the folds of --folds/--seed/--fold, the evaluation schedule of
//    --eval-every/--eval-every-from-epoch and the stop of --patience are the
//    notebook's, every --lr-log value is the notebook's per-layer rate with
//    --swa-anneal-steps (golden cli_train_cases.json, ref_cli_train.py), and the
//    reported RMSE (with --standardize-target on: in the target's units; with
//    --val-batch-size not dividing the fold) is transformers' RMSE of the saved
//    best checkpoint (test-time check_cli_rmse.py);
//  - demo: its help, and a start stopped by Ctrl-C that writes the table so far.
// The binary and the venv's Python are required: without them the tests fail.
#include <torch/torch.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "catch.hpp"
#include "golden.hpp"
#include "roberta_paths.hpp"
#include "test_helpers.hpp"

namespace fs = std::filesystem;
using finetune_test::contains;
using finetune_test::quote;
using finetune_test::read_file;
using finetune_test::run_split;
using finetune_test::TempDir;
using nlohmann::json;

namespace {

/// The roberta_regression binary; fails the test when it is not built.
std::string example_exe() {
  const std::string exe = finetune_test::kRobertaExe;
  if (exe.empty() || !fs::exists(exe))
    FAIL("the roberta_regression binary is not built (" << (exe.empty() ? "<unset>" : exe)
                                                        << "): build the examples");
  return exe;
}

/// The venv's Python (the oracles); fails the test when it is missing.
std::string python() {
  const std::string py = finetune_test::kPython;
  if (py.empty() || !fs::exists(py))
    FAIL("no Python for the test-time oracles (FINETUNE_PYTHON = "
         << (py.empty() ? "<unset>" : py) << "): run scripts/setup.sh to create .venv");
  return py;
}

/// `roberta_regression --threads 1 <args>`.
std::string example_command(const std::string& args) {
  std::string command = quote(example_exe());
  command += " --threads 1 ";
  command += args;
  return command;
}

/// Runs `roberta_regression --threads 1 <args>`, stdout and stderr together.
finetune_test::CommandResult run_example(const std::string& args) {
  return finetune_test::run_command(example_command(args));
}

/// Starts `argv` (stdout and stderr into `log`), sends it SIGINT a second after
/// `ready` (a file or folder it makes) exists, and returns its exit status;
/// fails the test when it does not get there or does not stop within two minutes.
int interrupt_once_started(const std::vector<std::string>& argv, const std::string& log,
                           const std::string& ready) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE(spawned == 0);
  auto exited = [pid](int& status) {
    int raw = 0;
    if (waitpid(pid, &raw, WNOHANG) != pid) return false;
    status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
    return true;
  };
  auto wait_for = [](double seconds, const std::function<bool()>& done) {
    for (int i = 0; i < static_cast<int>(seconds * 10); ++i) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return done();
  };
  int status = -1;
  const bool started = wait_for(120, [&] { return fs::exists(ready) || exited(status); });
  if (!started || !fs::exists(ready)) {
    if (!started) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    FAIL("no " << ready << " within 120 s (exit status " << status << "); log:\n"
               << read_file(log));
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  kill(pid, SIGINT);
  if (!wait_for(120, [&] { return exited(status); })) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    FAIL("still running 120 s after SIGINT; log:\n" << read_file(log));
  }
  return status;
}

std::string reference_script(const std::string& name) {
  return (fs::path(finetune_test::kSourceDir) / "tests" / "reference" / name).string();
}

/// Runs a test-time oracle script; its last stdout line is JSON.
json run_oracle(const std::string& script, const std::string& args) {
  TempDir tmp;  // stderr apart: transformers' progress bars and warnings
  const auto r = run_split("OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 " +
                               quote(python()) + " " + quote(reference_script(script)) + " " + args,
                           tmp.file("stderr.txt"));
  INFO(script << " " << args << "\nstdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.status == 0);
  const auto end = r.out.find_last_not_of('\n');
  REQUIRE(end != std::string::npos);
  const auto start = r.out.rfind('\n', end);
  return json::parse(r.out.substr(start == std::string::npos ? 0 : start + 1));
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(text);
  while (std::getline(in, part, sep)) parts.push_back(part);
  return parts;
}

/// A CSV without quoted fields: header + rows, as strings.
std::vector<std::vector<std::string>> read_csv(const std::string& path) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& line : split(read_file(path), '\n'))
    if (!line.empty()) rows.push_back(split(line, ','));
  return rows;
}

size_t column(const std::vector<std::string>& header, const std::string& name) {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return i;
  FAIL("no column " << name);
  return 0;
}

bool close_to(double got, double want, double relative) {
  return std::abs(got - want) <= relative * std::abs(want);
}

/// The command line of a golden train/table case (ref_cli_train.py's CASES).
std::string case_flags(const json& c, const std::string& out) {
  const std::string model = std::string(roberta_regression::kAssetsDir) + "/demo-model";
  std::ostringstream f;
  f << c["command"].get<std::string>() << " --model " << quote(model) << " --data "
    << quote(finetune_test::golden_path("cli_train.csv")) << " --out " << quote(out) << " --folds "
    << c["folds"] << " --fold " << c["fold"] << " --epochs " << c["epochs"] << " --batch-size "
    << c["batch_size"] << " --max-length " << c["max_length"] << " --patience " << c["patience"]
    << " --standardize-target " << c["standardize_target"].get<std::string>() << " --device cpu";
  char scale[32];
  std::snprintf(scale, sizeof scale, "%.17g", c["lr_scale"].get<double>());
  f << " --lr-scale " << scale;
  if (c["seed"] != 3377) f << " --seed " << c["seed"];  // 3377: the default
  if (c["val_batch_size"] != 64) f << " --val-batch-size " << c["val_batch_size"];
  if (c.value("subsample", 1) != 1) f << " --subsample " << c["subsample"];
  if (c["command"] == "train") {
    f << " --llrd " << c["llrd"].get<std::string>() << " --warmup-steps " << c["warmup_steps"];
    if (!c["swa_lr"].is_null())
      f << " --swa-lr " << c["swa_lr"] << " --swa-start-epoch " << c["swa_start_epoch"]
        << " --swa-anneal-steps " << c["swa_anneal_steps"];
    if (!c["eval_every"].is_null())
      f << " --eval-every " << c["eval_every"] << " --eval-every-from-epoch "
        << c["eval_every_from_epoch"];
  } else {
    f << " --rows 1";
  }
  return f.str();
}

/// An RMSE job for check_cli_rmse.py: the case's fold of cli_train.csv.
json rmse_job(const json& c, const std::string& checkpoint) {
  std::vector<int64_t> train_rows, val_rows;  // rows of the CSV (--subsample keeps some)
  const auto folds = c["fold_of_row"].get<std::vector<int64_t>>();
  const auto data_rows = c["data_rows"].get<std::vector<int64_t>>();
  REQUIRE(data_rows.size() == folds.size());
  for (size_t i = 0; i < folds.size(); ++i)
    (folds[i] == c["fold"].get<int64_t>() ? val_rows : train_rows).push_back(data_rows[i]);
  return {{"model", std::string(roberta_regression::kAssetsDir) + "/demo-model"},
          {"checkpoint", checkpoint},
          {"csv", finetune_test::golden_path("cli_train.csv")},
          {"train_rows", train_rows},
          {"val_rows", val_rows},
          {"max_length", c["max_length"]},
          // auto: on only with an `address` column, which cli_train.csv lacks.
          {"standardize", c["standardize_target"] == "on"}};
}

/// The raw evaluations of a fold's history.csv, as [epoch, batch] pairs, and their metrics.
void read_history(const std::string& path, std::vector<std::vector<int64_t>>& evaluations,
                  std::vector<std::string>& metrics) {
  const auto rows = read_csv(path);
  REQUIRE(rows.size() >= 2);
  const auto& h = rows.front();
  const size_t epoch = column(h, "epoch"), batch = column(h, "batch"),
               weights = column(h, "weights"), metric = column(h, "metric");
  for (size_t i = 1; i < rows.size(); ++i) {
    if (rows[i].at(weights) != "raw") continue;
    evaluations.push_back({std::stoll(rows[i].at(epoch)), std::stoll(rows[i].at(batch))});
    metrics.push_back(rows[i].at(metric));
  }
}

const json& golden_case(const json& golden, const std::string& name) {
  for (const auto& c : golden["cases"])
    if (c["name"] == name) return c;
  FAIL("no case " << name << " in cli_train_cases.json");
  return golden;
}

}  // namespace

TEST_CASE("tokenize: each stdin line as RobertaTokenizerFast encodes it", "[roberta][cli]") {
  const auto golden = finetune_test::load_golden_json("cli_tokenize_cases.json");
  TempDir tmp;
  const std::string input = tmp.file("stdin.txt");
  std::ofstream(input, std::ios::binary) << golden["stdin"].get<std::string>();
  const size_t n_lines = split(golden["stdin"].get<std::string>(), '\n').size();

  for (const auto& c : golden["cases"]) {
    DYNAMIC_SECTION(c["name"].get<std::string>()) {
      std::string args = "tokenize";
      const std::string assets = c["assets"];
      if (assets != "roberta-bpe") {  // roberta-bpe: the subcommand's default files
        const auto dir = fs::path(roberta_regression::kAssetsDir) / assets;
        args += " --vocab " + quote((dir / "vocab.json").string()) + " --merges " +
                quote((dir / "merges.txt").string());
      }
      if (c["max_length"] != 0) args += " --max-length " + c["max_length"].dump();
      if (c["add_prefix_space"].get<bool>()) args += " --add-prefix-space";
      const auto r =
          run_split(example_command(args + " < " + quote(input)), tmp.file("stderr.txt"));
      INFO(args << "\nstderr: " << r.err);
      REQUIRE(r.status == 0);
      std::vector<std::string> lines = split(r.out, '\n');
      REQUIRE(lines.size() == n_lines);
      REQUIRE(c["lines"].size() == n_lines);
      for (size_t i = 0; i < n_lines; ++i) {
        INFO("line " << i << ": " << lines[i]);
        const auto got = json::parse(lines[i]);
        CHECK(got["ids"] == c["lines"][i]["ids"]);
        CHECK(got["mask"] == c["lines"][i]["mask"]);
      }
    }
  }

  SECTION("a bad --max-length or vocabulary: a message naming it, non-zero exit") {
    auto r = run_example("tokenize --max-length 1 < " + quote(input));
    CHECK(r.status == 1);
    CHECK(contains(r.output, "--max-length must be 0 or at least 2, got 1"));
    const std::string missing = tmp.file("no_such_vocab.json");
    r = run_example("tokenize --vocab " + quote(missing) + " < " + quote(input));
    CHECK(r.status == 1);
    CHECK(contains(r.output, missing));
  }
}

TEST_CASE("pretrain: a tiny run writes a folder transformers loads, with HF's lr schedule",
          "[roberta][cli]") {
  python();  // the test-time oracle: fail at once, not after the run, when it is missing
  const auto golden = finetune_test::load_golden_json("cli_pretrain_cases.json");
  const auto& flags = golden["flags"];
  TempDir tmp;
  const std::string out = tmp.file("pretrained");
  std::ostringstream args;
  args << "pretrain --data " << quote(finetune_test::golden_path("cli_train.csv")) << " --out "
       << quote(out) << " --device cpu";
  for (const auto& [key, value] : flags.items()) {
    std::string flag = key;
    for (char& ch : flag)
      if (ch == '_') ch = '-';
    args << " --" << flag << " " << value.dump();
  }
  const auto r = run_example(args.str());
  INFO(args.str() << "\n" << r.output);
  REQUIRE(r.status == 0);
  for (const char* name : {"config.json", "model.safetensors", "vocab.json", "merges.txt",
                           "pretrain_log.csv", "recipe.json"})
    CHECK(fs::exists(fs::path(out) / name));

  // recipe.json records the flags it ran with.
  const auto recipe = json::parse(read_file((fs::path(out) / "recipe.json").string()));
  for (const auto& [key, value] : flags.items()) {
    if (key == "log_every") continue;  // not a recipe entry: it changes nothing in the model
    INFO(key);
    CHECK(recipe.at(key) == value);
  }
  CHECK(recipe["command"] == "roberta_regression pretrain");
  CHECK(recipe["data"] == "cli_train.csv");
  CHECK(recipe["tokenizer"] == "demo-bpe");
  CHECK(recipe["device"] == "cpu");
  CHECK(recipe["threads"] == 1);

  // pretrain_log.csv: the logged steps, HF's schedule's lr at each (printed %.6g).
  const auto log = read_csv((fs::path(out) / "pretrain_log.csv").string());
  REQUIRE(!log.empty());
  CHECK(log.front() == std::vector<std::string>{"step", "loss", "masked_accuracy", "lr"});
  const auto& want = golden["log"];
  REQUIRE(log.size() == want.size() + 1);
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("log row " << i + 1);
    CHECK(std::stoll(log[i + 1].at(0)) == want[i]["step"].get<int64_t>());
    const double loss = std::stod(log[i + 1].at(1)), accuracy = std::stod(log[i + 1].at(2));
    CHECK((std::isfinite(loss) && loss > 0.0));
    CHECK((accuracy >= 0.0 && accuracy <= 1.0));
    const double lr = std::stod(log[i + 1].at(3)), lr_want = want[i]["lr"].get<double>();
    CHECK(std::abs(lr - lr_want) <= 5e-6 * std::abs(lr_want) + 1e-15);
  }

  // transformers loads the folder as a user would; nothing missing or left over.
  const auto check = run_oracle("check_cli_pretrain.py", quote(out));
  INFO(check.dump());
  CHECK(check["missing"].empty());
  CHECK(check["unexpected"].empty());
  CHECK(check["mismatched"].empty());
  CHECK(check["decoder_tied"] == true);
  CHECK(check["finite"] == true);
  CHECK(check["hidden_size"] == flags["hidden_size"]);
  CHECK(check["layers"] == flags["layers"]);
  CHECK(check["heads"] == flags["heads"]);
  CHECK(check["intermediate_size"] == flags["intermediate_size"]);
  // HF's RoBERTa positions start after the padding id: max_length + 2 rows at least.
  CHECK(check["max_position_embeddings"].get<int64_t>() >= flags["max_length"].get<int64_t>() + 2);
  CHECK(check["vocab_size"] == check["tokenizer_vocab_size"]);
  CHECK(check["logits_shape"].back() == check["vocab_size"]);

  // And `train` fine-tunes from it (its pooler and regressor initialized).
  const std::string train = "train --model " + quote(out) + " --data " +
                            quote(finetune_test::golden_path("cli_train.csv")) +
                            " --folds 2 --fold 0 --epochs 1 --batch-size 8 --max-length " +
                            flags["max_length"].dump() + " --out " + quote(tmp.file("finetuned"));
  const auto t = run_example(train);
  INFO(train << "\n" << t.output);
  REQUIRE(t.status == 0);
  const auto results = json::parse(read_file(tmp.file("finetuned/results.json")));
  REQUIRE(results["folds"].size() == 1);
  CHECK(std::isfinite(results["folds"][0]["best_rmse"].get<double>()));
}

TEST_CASE("train and table flags against the notebook's folds, schedule and rates",
          "[roberta][cli]") {
  python();  // the test-time oracle: fail at once, not after the runs, when it is missing
  const auto golden = finetune_test::load_golden_json("cli_train_cases.json");
  TempDir tmp;
  json jobs = json::array();
  std::vector<double> reported;  // the binary's RMSE for each job
  std::vector<std::string> names;

  for (const std::string name : {"train_main", "train_patience"}) {
    const json& c = golden_case(golden, name);
    const std::string out = tmp.file(name);
    std::string args = case_flags(c, out);
    if (c["lr_log"].get<bool>()) args += " --lr-log " + quote(tmp.file(name + "_lr.csv"));
    const auto r = run_example(args);
    INFO(name << ": " << args << "\n" << r.output);
    REQUIRE(r.status == 0);
    // --device cpu and --standardize-target in the run's summary line.
    CHECK(contains(r.output, "; cpu (1 threads), LibTorch"));
    // --subsample N: "36 rows" become "18 rows (1 in 2)".
    const int64_t every = c.value("subsample", 1);
    CHECK(contains(r.output, std::to_string(c["data_rows"].size()) + " rows" +
                                 (every > 1 ? " (1 in " + std::to_string(every) + ")" : ",")));
    CHECK(contains(r.output, c["standardize_target"] == "on"
                                 ? "target standardized for training, RMSE in target units"
                                 : "target as is"));

    // --folds/--seed/--fold: only the chosen fold, of the notebook's size.
    const auto results = json::parse(read_file(out + "/results.json"));
    REQUIRE(results["folds"].size() == 1);
    const auto& fold = results["folds"][0];
    CHECK(fold["fold"] == c["fold"]);
    CHECK(fold["n_train"] == c["n_train"]);
    CHECK(fold["n_val"] == c["n_val"]);
    // --eval-every/--eval-every-from-epoch/--patience: the notebook's evaluations and stop.
    CHECK(fold["steps"] == c["steps"]);
    CHECK(fold["evaluations"] == c["evaluations"].size());
    CHECK(fold["early_stopped"] == c["early_stopped"]);
    std::vector<std::vector<int64_t>> evaluations;
    std::vector<std::string> metrics;
    read_history(out + "/fold" + c["fold"].dump() + "/history.csv", evaluations, metrics);
    CHECK(evaluations == c["evaluations"].get<std::vector<std::vector<int64_t>>>());
    if (c.value("constant_metric", false)) {
      // The premise of the case: frozen weights give the same RMSE every time.
      for (const auto& m : metrics) REQUIRE(m == metrics.front());
      CHECK(contains(r.output, "Early stopping triggered!"));
    }
    // The printed score is the recorded one.
    char printed[64];
    std::snprintf(printed, sizeof printed, "fold %d: best RMSE %.4f", c["fold"].get<int>(),
                  fold["best_rmse"].get<double>());
    CHECK(contains(r.output, printed));

    if (c["lr_log"].get<bool>()) {
      // --lr-log: one fold, so no fold column; every rate of every step is the notebook's.
      const auto log = read_csv(tmp.file(name + "_lr.csv"));
      REQUIRE(!log.empty());
      std::vector<std::string> header{"step"};
      for (const auto& col : c["columns"]) header.push_back(col);
      CHECK(log.front() == header);
      const auto& lrs = c["lrs"];
      REQUIRE(log.size() == lrs.size() + 1);
      for (size_t step = 0; step < lrs.size(); ++step) {
        REQUIRE(log[step + 1].size() == header.size());
        CHECK(std::stoll(log[step + 1][0]) == static_cast<int64_t>(step));
        for (size_t col = 1; col < header.size(); ++col) {
          const double got = std::stod(log[step + 1][col]);
          const double want = lrs[step][col - 1].get<double>();
          INFO("step " << step << ", " << header[col] << ": " << got << " vs " << want);
          CHECK(close_to(got, want, 1e-12));
        }
      }
    }
    jobs.push_back(rmse_job(c, out + "/fold" + c["fold"].dump() + "/best.safetensors"));
    reported.push_back(fold["best_rmse"]);
    names.push_back(name);
  }

  {  // table --json: the table where --json says, Markdown beside it, not in --out.
    const json& c = golden_case(golden, "table_json");
    const std::string out = tmp.file("table_out");
    const std::string json_path = tmp.file("elsewhere/custom.json");
    fs::create_directories(tmp.file("elsewhere"));
    const std::string args = case_flags(c, out) + " --json " + quote(json_path);
    const auto r = run_example(args);
    INFO(args << "\n" << r.output);
    REQUIRE(r.status == 0);
    REQUIRE(fs::exists(json_path));
    CHECK(fs::exists(tmp.file("elsewhere/custom.md")));
    CHECK_FALSE(fs::exists(out + "/table.json"));
    CHECK(contains(r.output, "target as is"));  // auto: cli_train.csv has no address column
    const auto table = json::parse(read_file(json_path));
    REQUIRE(table["rows"].size() == 1);
    const auto& row = table["rows"][0];
    CHECK(row["row"] == 1);
    REQUIRE(row["folds"].size() == 1);
    CHECK(row["folds"][0]["fold"] == c["fold"]);
    CHECK(row["folds"][0]["n_val"] == c["n_val"]);
    CHECK(row["folds"][0]["steps"] == c["steps"]);
    CHECK(row["folds"][0]["evaluations"] == c["evaluations"].size());
    REQUIRE(row["fold_rmse"].size() == 1);
    jobs.push_back(rmse_job(c, out + "/row1/fold" + c["fold"].dump() + "/best.safetensors"));
    reported.push_back(row["fold_rmse"][0]);
    names.push_back("table_json");
  }

  // The reported RMSE is transformers' RMSE of the saved best checkpoint over the
  // fold's rows, in target units (standardized runs: prediction * std + mean).
  std::ofstream(tmp.file("rmse_jobs.json")) << jobs.dump();
  const auto oracle = run_oracle("check_cli_rmse.py", quote(tmp.file("rmse_jobs.json")));
  REQUIRE(oracle.size() == jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    INFO(names[i] << ": reported " << reported[i] << ", transformers " << oracle[i].dump());
    CHECK(close_to(reported[i], oracle[i]["rmse"].get<double>(), 2e-5));
  }
}

TEST_CASE("--device, and bad values of the train flags: refused with a message naming them",
          "[roberta][cli]") {
  TempDir tmp;
  const std::string base = "train --model " +
                           quote(std::string(roberta_regression::kAssetsDir) + "/demo-model") +
                           " --data " + quote(finetune_test::golden_path("cli_train.csv")) +
                           " --folds 2 --batch-size 8 --max-length 16";
  const std::string common = base + " --fold 0 --epochs 1 --out " + quote(tmp.file("run"));
  auto r = run_example(common + " --device tpu");
  {
    INFO(r.output);
    CHECK(r.status != 0);
    CHECK(contains(r.output, "--device: tpu not in {cpu,cuda}"));
  }
  if (!torch::cuda::is_available()) {
    r = run_example(common + " --device cuda");
    INFO(r.output);
    CHECK(r.status == 1);
    CHECK(contains(r.output, "--device cuda: no CUDA device is available"));
    r = run_example("pretrain --out " + quote(tmp.file("pre")) + " --device cuda --steps 1");
    CHECK(r.status == 1);
    CHECK(contains(r.output, "--device cuda: no CUDA device is available"));
  } else {
    r = run_example(base + " --fold 0 --epochs 1 --device cuda --out " +
                    quote(tmp.file("cuda_run")));
    INFO(r.output);
    CHECK(r.status == 0);
    CHECK(contains(r.output, "; cuda (1 threads)"));
    CHECK(fs::exists(tmp.file("cuda_run/results.json")));
  }

  // Each flag's bad value: {flags, what the message says}.
  const std::vector<std::pair<std::string, std::string>> bad = {
      {common + " --val-batch-size 0", "--val-batch-size: Value 0 not in range"},
      {common + " --patience -1", "--patience: Value -1 not in range"},
      {common + " --swa-anneal-steps -1", "--swa-anneal-steps: Value -1 not in range"},
      {common + " --eval-every-from-epoch -1", "--eval-every-from-epoch: Value -1 not in range"},
      {common + " --eval-every 0", "--eval-every: Value 0 not in range"},
      {common + " --standardize-target sometimes",
       "--standardize-target: sometimes not in {auto,on,off}"},
      {common + " --seed abc", "--seed = abc"},
      {base + " --epochs 1 --fold 2 --out " + quote(tmp.file("run")), "--fold 2: expected 0 to 1"},
      {common + " --eval-every 2 --eval-every-from-epoch 1",
       "--eval-every-from-epoch 1 is not before --epochs 1"},
      {common + " --swa-lr 2e-6 --swa-start-epoch 1",
       "--swa-start-epoch 1 is not before --epochs 1"},
      {common + " --grad-accum 0", "--grad-accum: Value 0 not in range"},
      {common + " --unfreeze-every 0", "--unfreeze-every: Value 0 not in range"},
      {common + " --unfreeze-unit weeks", "--unfreeze-unit: weeks not in {epochs,steps}"},
      {common + " --save-state-every -1", "--save-state-every: Value -1 not in range"},
      {common + " --dropout 1.5", "--dropout: Value 1.5 not in range"},
      {common + " --resume " + quote(tmp.file("nowhere")), "--out excludes --resume"},
      {base + " --fold 0 --epochs 1 --resume " + quote(tmp.file("nowhere")),
       "no training state there"},
  };
  for (const auto& [flags, message] : bad) {
    r = run_example(flags);
    INFO(flags << "\n" << r.output);
    CHECK(r.status != 0);
    CHECK(contains(r.output, message));
  }
  CHECK_FALSE(fs::exists(tmp.file("run/results.json")));
}

TEST_CASE("demo: its help, and a start that Ctrl-C stops with the table so far", "[roberta][cli]") {
  auto r = run_example("demo --help");
  INFO(r.output);
  CHECK(r.status == 0);
  CHECK(contains(r.output, "--out"));

  TempDir tmp;
  const std::string out = tmp.file("demo");
  // Ctrl-C a second after the first fold's folder appears (its training has
  // begun; the whole demo takes minutes): the current step finishes, the table
  // so far is written, exit status 130.
  const auto status =
      interrupt_once_started({example_exe(), "--threads", "1", "demo", "--out", out},
                             tmp.file("demo.log"), out + "/row1/fold0");
  r = {status, read_file(tmp.file("demo.log"))};
  INFO(r.output);
  CHECK(r.status == 130);
  CHECK(contains(r.output,
                 "demo: the same as `roberta_regression table --subsample 2 --folds 2 "
                 "--epochs 2 --max-length 64 --lr-scale 100 --swa-start-epoch 1 "
                 "--eval-every-from-epoch 1 --warmup-steps 15 --reinit-layers 2 "
                 "--with-random-init --out " +
                     out + "`"));
  CHECK(contains(r.output, "interrupted: the table so far is in " + out + "/table.json"));
  const auto table = json::parse(read_file(out + "/table.json"));
  CHECK(table["subsample"] == 2);
  CHECK(table["folds"] == 2);
  CHECK(table["epochs"] == 2);
  CHECK(table["max_length"] == 64);
  CHECK(table["lr_scale"] == 100.0);
  CHECK(table["threads"] == 1);
  // --standardize-target auto on the embedded data (it has an address column):
  // folds grouped by address, the year standardized, RMSE in years.
  CHECK(contains(table["header"],
                 "2 folds grouped by address, target standardized for training, "
                 "RMSE in target units"));
  CHECK(fs::path(table["data"].get<std::string>()).filename() == "sotu_passages.csv.gz");
  CHECK(fs::path(table["model"].get<std::string>()).filename() == "demo-model");
  REQUIRE(table["rows"].size() == 1);
  CHECK(table["rows"][0]["technique"] == "basic fine-tuning");
  REQUIRE(table["rows"][0]["folds"].size() == 1);
  CHECK(table["rows"][0]["folds"][0]["interrupted"] == true);
  CHECK(table["rows"][0]["folds"][0]["steps"].get<int64_t>() >= 1);
}
