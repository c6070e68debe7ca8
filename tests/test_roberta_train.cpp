// The example's training loop (trainer.hpp) and its `train` / `table`
// subcommands (cmd_train.hpp): the per-layer learning rates equal the
// notebook's step for step (oracle: tests/reference/ref_train_lr.py), a run
// learns, and bad input, bad flags and Ctrl-C end cleanly.
#include <torch/torch.h>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "golden.hpp"
#include "roberta_paths.hpp"
#include "safetensors.hpp"
#include "test_helpers.hpp"
#include "trainer.hpp"

using namespace roberta_regression;
namespace fs = std::filesystem;
using finetune_test::contains;
using finetune_test::TempDir;

namespace {

/// A tiny RoBERTa folder in HF's layout, with the demo BPE files.
std::string make_model_dir(const std::string& dir, int64_t layers, int64_t hidden = 8,
                           int64_t vocab_size = 8192) {
  RobertaConfig c;
  c.vocab_size = vocab_size;
  c.hidden_size = hidden;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 2;
  c.intermediate_size = 2 * hidden;
  c.max_position_embeddings = 40;
  torch::manual_seed(1);
  RobertaRegressor model(c);
  init_roberta_weights(*model->roberta, c.initializer_range);
  save_pretrained(*model, c, dir);
  const fs::path bpe = fs::path(kAssetsDir) / "demo-bpe";
  fs::copy_file(bpe / "vocab.json", fs::path(dir) / "vocab.json",
                fs::copy_options::overwrite_existing);
  fs::copy_file(bpe / "merges.txt", fs::path(dir) / "merges.txt",
                fs::copy_options::overwrite_existing);
  return dir;
}

/// n_train rows in fold 1 and n_val rows in fold 0, random ids.
EncodedDataset synthetic_data(int64_t n_train, int64_t n_val, int64_t length) {
  const int64_t n = n_train + n_val;
  EncodedDataset d;
  torch::manual_seed(2);
  d.input_ids = torch::randint(3, 8000, {n, length}, torch::kInt64);
  d.attention_mask = torch::ones({n, length}, torch::kInt64);
  d.targets = torch::randn({n}, torch::kFloat64);
  for (int64_t i = 0; i < n; ++i) d.fold_of_row.push_back(i < n_val ? 0 : 1);
  return d;
}

FoldCallbacks silent() {
  FoldCallbacks c;
  c.log = [](const std::string&) {};
  return c;
}

struct CommandResult {
  int status;
  std::string output;
};

/// Runs a shell command, stdout and stderr captured.
CommandResult run_command(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

/// Runs `args` with the roberta_regression binary.
CommandResult run_example(const std::string& args) {
  std::string command(finetune_test::kRobertaExe);  // piecewise: GCC 12's false -Warray-bounds
  command += " --threads 1 ";
  command += args;
  return run_command(command);
}

bool example_built() {
  const std::string exe = finetune_test::kRobertaExe;
  return !exe.empty() && fs::exists(exe);
}

/// A CommonLit-shaped CSV whose target follows one word: learnable.
std::string write_csv(const std::string& path, int64_t rows) {
  std::ofstream out(path);
  out << "id,url_legal,license,excerpt,target,standard_error\n";
  for (int64_t i = 0; i < rows; ++i) {
    const bool high = i % 2 == 0;
    out << "row" << i << ",,,\"Passage " << i << ", which says " << (high ? "alpha" : "beta")
        << " and \"\"quotes\"\", again " << (high ? "alpha" : "beta") << ".\","
        << (high ? 1.0 : -1.0) + 0.01 * static_cast<double>(i % 7) << ",0.5\n";
  }
  return path;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("the lr log equals the notebook's per-layer rates step for step", "[roberta][train]") {
  const auto golden = finetune_test::load_golden_json("train_lr_cases.json");
  TempDir tmp;
  const ModelFiles files = load_model_files(make_model_dir(tmp.file("model"), 12), 8);
  for (const auto& c : golden["cases"]) {
    for (const double scale : {1.0, 100.0}) {
      DYNAMIC_SECTION(c["name"].get<std::string>() << ", lr scale " << scale) {
        TrainSettings s;
        s.llrd = parse_llrd(c["llrd"]);
        s.lr_scale = scale;
        s.warmup_steps = c["warmup_steps"];
        if (!c["swa_lr"].is_null()) s.swa_lr = c["swa_lr"].get<double>();
        s.swa_start_epoch = c["swa_start_epoch"];
        s.swa_anneal_steps = c["swa_anneal_steps"];
        s.epochs = c["epochs"];
        s.batch_size = c["batch_size"];
        s.max_length = 8;
        s.out_dir = tmp.file("run");
        const auto data = synthetic_data(c["n_train"], 5, 8);
        const FoldResult r = train_fold(s, files, data, 0, silent());

        REQUIRE(r.lr_columns == c["columns"].get<std::vector<std::string>>());
        const auto& expected = c["lrs"];
        REQUIRE(r.lrs.size() == expected.size());
        for (size_t step = 0; step < r.lrs.size(); ++step) {
          for (size_t col = 0; col < r.lr_columns.size(); ++col) {
            const double want = expected[step][col].get<double>() * scale;
            const double got = r.lrs[step][col];
            INFO("step " << step << ", " << r.lr_columns[col]);
            CHECK(std::abs(got - want) <= 1e-12 * std::abs(want));
          }
        }
      }
    }
  }
}

TEST_CASE("a fold run learns, evaluates as the notebook and keeps the best checkpoint",
          "[roberta][train]") {
  TempDir tmp;
  const ModelFiles files = load_model_files(make_model_dir(tmp.file("model"), 3, 16), 16);
  TrainSettings s;
  s.data = write_csv(tmp.file("train.csv"), 64);
  s.folds = 2;
  s.random_init = true;
  s.llrd = finetune::LLRDMode::grouped;
  s.lr_scale = 1000.0;  // 1e-3 .. 3.6e-3: a tiny random model needs large steps
  s.epochs = 12;
  s.batch_size = 4;
  s.max_length = 16;
  s.swa_lr = 2e-6;
  s.swa_start_epoch = 10;
  s.eval_every = 1;
  s.eval_every_from_epoch = 11;
  s.out_dir = tmp.file("run");
  const auto data = load_dataset(s, *files.tokenizer);
  const FoldResult r = train_fold(s, files, data, 0, silent());

  // Once per epoch before epoch 11, then every batch of it: 11 + batches.
  const int64_t batches = (r.n_train + 3) / 4;
  CHECK(r.steps == 12 * batches);
  CHECK(r.evaluations == 11 + batches);
  REQUIRE(r.curve.size() == static_cast<size_t>(r.evaluations));
  CHECK(r.curve.front().step == batches);
  // It learned: the target is +-1 by one word.
  CHECK(r.curve.back().train_rmse < 0.5 * r.curve.front().train_rmse);
  CHECK(r.best_rmse < 0.5);
  REQUIRE(r.best_swa_rmse.has_value());
  CHECK(std::isfinite(*r.best_swa_rmse));
  CHECK(r.curve.back().swa_val_rmse.has_value());
  CHECK_FALSE(r.curve.front().swa_val_rmse.has_value());

  // The best checkpoint holds the model with the best validation RMSE.
  const auto best = fs::path(r.checkpoint_dir) / "best.safetensors";
  REQUIRE(fs::exists(best));
  REQUIRE(fs::exists(fs::path(r.checkpoint_dir) / "best_swa.safetensors"));
  ModelFiles reloaded = load_model_files(files.dir, 16);
  RobertaRegressor model = build_regressor(reloaded, /*random_init=*/true);
  load_safetensors_weights(*model, best.string());
  model->eval();
  torch::NoGradGuard no_grad;
  std::vector<int64_t> val_rows;
  for (size_t i = 0; i < data.fold_of_row.size(); ++i)
    if (data.fold_of_row[i] == 0) val_rows.push_back(static_cast<int64_t>(i));
  const auto index = torch::tensor(val_rows, torch::kInt64);
  const auto prediction = model->forward(data.input_ids.index_select(0, index),
                                         data.attention_mask.index_select(0, index));
  const double rmse = torch::sqrt(torch::mse_loss(prediction.to(torch::kFloat64),
                                                  data.targets.index_select(0, index)))
                          .item<double>();
  CHECK(rmse == Approx(r.best_rmse).epsilon(1e-4));
}

TEST_CASE("bad settings and files are reported with what is wrong", "[roberta][train]") {
  TempDir tmp;
  const std::string model_dir = make_model_dir(tmp.file("model"), 2);
  TrainSettings s;
  s.data = write_csv(tmp.file("train.csv"), 20);
  s.folds = 2;
  s.max_length = 8;
  s.out_dir = tmp.file("run");
  const ModelFiles files = load_model_files(model_dir, 8);
  const auto data = load_dataset(s, *files.tokenizer);

  auto message = [&](TrainSettings bad) {
    return finetune_test::invalid_argument_message(
        [&] { train_fold(bad, files, data, 0, silent()); });
  };
  TrainSettings reinit = s;
  reinit.reinit_layers = 3;
  CHECK(contains(message(reinit), "3"));
  CHECK(contains(message(reinit), "2"));
  TrainSettings warmup = s;
  warmup.warmup_steps = 1000;
  CHECK(contains(message(warmup), "warm"));
  TrainSettings scale = s;
  scale.lr_scale = -1.0;
  CHECK(contains(message(scale), "--lr-scale"));

  TrainSettings too_long = s;
  CHECK(contains(finetune_test::invalid_argument_message([&] { load_model_files(model_dir, 100); }),
                 "--max-length 100"));
  TrainSettings wrong_fold = s;
  wrong_fold.fold = 2;
  CHECK(contains(
      finetune_test::invalid_argument_message([&] { load_dataset(wrong_fold, *files.tokenizer); }),
      "--fold 2"));

  // A vocabulary larger than the model's embeddings: the tokenizer is not this model's.
  const std::string small_vocab = make_model_dir(tmp.file("small_vocab"), 2, 8, 100);
  CHECK(contains(finetune_test::invalid_argument_message([&] { load_model_files(small_vocab, 8); }),
                 "vocab.json has 8192 tokens"));
  // Weights of another shape than config.json says.
  const std::string other = make_model_dir(tmp.file("other"), 2, 16);
  fs::copy_file(fs::path(other) / "model.safetensors", fs::path(model_dir) / "model.safetensors",
                fs::copy_options::overwrite_existing);
  const std::string shape_message = finetune_test::invalid_argument_message(
      [&] { build_regressor(load_model_files(model_dir, 8), false); });
  CHECK(contains(shape_message, "model.safetensors"));
  CHECK(contains(shape_message, "16"));
}

TEST_CASE("train and table on the command line", "[roberta][train][cli]") {
  if (!example_built()) {
    WARN("roberta_regression binary not built: train/table subcommands not checked");
    return;
  }
  TempDir tmp;
  const std::string model = make_model_dir(tmp.file("model"), 3, 16);
  const std::string csv = write_csv(tmp.file("train.csv"), 24);
  const std::string data = " --model " + model + " --data " + csv + " --max-length 16";
  const std::string common = data + " --folds 2 --batch-size 4 --epochs 2";

  SECTION("train: every fold, the lr log, results.json, figures") {
    const auto r = run_example("train" + common +
                               " --llrd layerwise --swa-lr 2e-6 --swa-start-epoch 1"
                               " --out " +
                               tmp.file("run") + " --lr-log " + tmp.file("lr.csv") + " --plot " +
                               tmp.file("plots"));
    INFO(r.output);
    REQUIRE(r.status == 0);
    CHECK(contains(r.output, "fold 0: best RMSE"));
    CHECK(contains(r.output, "fold 1: best RMSE"));
    CHECK(contains(r.output, "CV: ["));
    const std::string log = read_file(tmp.file("lr.csv"));
    CHECK(log.rfind("fold,step,embeddings,layer0,layer1,layer2,pooler,regressor\n", 0) == 0);
    // 12 rows per fold -> 3 steps per epoch, 2 epochs, 2 folds, plus the header.
    CHECK(std::count(log.begin(), log.end(), '\n') == 1 + 2 * 6);
    const auto results = nlohmann::json::parse(read_file(tmp.file("run/results.json")));
    CHECK(results["folds"].size() == 2);
    CHECK(results["llrd"] == "layerwise");
    CHECK(fs::exists(tmp.file("run/fold1/best.safetensors")));
    CHECK(fs::exists(tmp.file("plots/lr_fold0.csv")));
    CHECK(fs::exists(tmp.file("plots/lr_fold0.gp")));
  }

  SECTION("table: the chosen rows, Markdown and JSON") {
    const auto r =
        run_example("table" + common +
                    " --rows 1,6 --warmup-steps 2 --reinit-layers 1 --swa-start-epoch 1 --out " +
                    tmp.file("table") + " --with-random-init");
    INFO(r.output);
    REQUIRE(r.status == 0);
    CHECK(contains(r.output, "| 1 | basic fine-tuning |"));
    CHECK(contains(r.output, "| 6 | + SWA (swa_lr 2e-06) |"));
    CHECK_FALSE(contains(r.output, "+ layer-wise LLRD |"));
    const auto table = nlohmann::json::parse(read_file(tmp.file("table/table.json")));
    REQUIRE(table["rows"].size() == 2);
    CHECK(table["rows"][0]["fold_rmse"].size() == 2);
    CHECK(table["rows"][1]["swa_rmse"].size() == 2);
    CHECK(contains(read_file(tmp.file("table/table.md")), "| technique |"));
  }

  SECTION("bad flags and bad files: one message, non-zero exit") {
    auto r = run_example("train" + common + " --llrd sideways");
    CHECK(r.status != 0);
    CHECK(contains(r.output, "--llrd"));
    r = run_example("train" + common + " --reinit-layers 7 --out " + tmp.file("bad"));
    CHECK(r.status != 0);
    CHECK(contains(r.output, "7"));
    std::ofstream(tmp.file("no_target.csv")) << "id,excerpt,standard_error\na,text,0.5\n";
    r = run_example("train --model " + model + " --max-length 16 --data " +
                    tmp.file("no_target.csv"));
    CHECK(r.status != 0);
    CHECK(contains(r.output, "no_target.csv"));
    CHECK(contains(r.output, "target"));
    std::ofstream(tmp.file("bad_target.csv"))
        << "id,excerpt,target,standard_error\na,text,1.0,0.5\nb,more text,high,0.5\n";
    r = run_example("train --model " + model + " --max-length 16 --data " +
                    tmp.file("bad_target.csv"));
    CHECK(r.status != 0);
    CHECK(contains(r.output, "bad_target.csv:3"));
    r = run_example("train --model " + tmp.file("missing") + " --data " + csv);
    CHECK(r.status != 0);
    CHECK(contains(r.output, "missing"));
  }

  SECTION("Ctrl-C stops after the current step, with the best checkpoint intact") {
    // SIGINT after 4 s of a run far longer than that. An unhandled SIGINT would
    // also give status 130: the message tells the handled stop apart.
    const std::string command = "timeout --preserve-status -s INT 4 " +
                                std::string(finetune_test::kRobertaExe) + " --threads 1 train" +
                                data + " --folds 2 --batch-size 4 --epochs 100000 --out " +
                                tmp.file("long");
    const auto r = run_command(command);
    INFO(r.output);
    CHECK(r.status == 130);
    CHECK(contains(r.output, "interrupted after step"));
    const auto best = read_safetensors(tmp.file("long/fold0/best.safetensors"));
    CHECK(std::any_of(best.tensors.begin(), best.tensors.end(),
                      [](const auto& named) { return named.first == "regressor.weight"; }));
  }
}

TEST_CASE("the shipped demo model loads: only the pooler is left to initialize",
          "[roberta][train]") {
  const std::string dir = std::string(kAssetsDir) + "/demo-model";
  const ModelFiles files = load_model_files(dir, 96);
  CHECK(files.config.num_hidden_layers == 4);
  CHECK(files.tokenizer->vocab_size() == files.config.vocab_size);
  RobertaRegressor model(files.config);
  const LoadReport report =
      load_safetensors_weights(*model, (std::filesystem::path(dir) / "model.safetensors").string());
  for (const auto& name : report.missing) {
    INFO(name);
    CHECK((name.rfind("roberta.pooler.", 0) == 0 || name.rfind("regressor.", 0) == 0));
  }
  CHECK(report.loaded.size() == model->named_parameters().size() - report.missing.size());
  CHECK_NOTHROW(build_regressor(files, /*random_init=*/false));
}
