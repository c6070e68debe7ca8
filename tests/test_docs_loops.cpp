// The complete training loops of docs/resuming.md, docs/accumulation.md,
// docs/mixed_precision.md and docs/swa.md, compiled and run on a tiny model. Each page shows
// the code between this file's "docs/<page>: begin" and "end" markers; the
// first test case checks that the pages still show exactly that code
// (indentation aside). Change both together.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "catch.hpp"
#include "finetune/finetune.hpp"
#include "test_config.hpp"
#include "test_helpers.hpp"

namespace {

using finetune_test::TempDir;

// A tiny encoder with Hugging Face's names (embeddings., encoder.layer.{i}.,
// regressor.), so that LayerwiseLRGroups' default rules find its blocks.
struct EncoderImpl : torch::nn::Module {
  EncoderImpl() { register_module("layer", layer); }
  torch::nn::ModuleList layer{torch::nn::Linear(8, 8), torch::nn::Linear(8, 8)};
};
TORCH_MODULE(Encoder);

struct NetImpl : torch::nn::Module {
  explicit NetImpl(double dropout = 0.2) : drop(dropout) {
    register_module("embeddings", embeddings);
    register_module("encoder", encoder);
    register_module("drop", drop);
    register_module("regressor", regressor);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = torch::relu(embeddings(x));
    for (const auto& block : *encoder->layer)
      h = torch::relu(block->as<torch::nn::Linear>()->forward(h));
    return regressor(drop(h)).squeeze(-1);
  }
  torch::nn::Linear embeddings{4, 8};
  Encoder encoder;
  torch::nn::Dropout drop;
  torch::nn::Linear regressor{8, 1};
};
TORCH_MODULE(Net);

struct Data {
  torch::Tensor x, y, val_x, val_y;
  explicit Data(int64_t rows, torch::Dtype dtype = torch::kFloat) {
    auto g = at::detail::createCPUGenerator(5);
    x = torch::randn({rows, 4}, g).to(dtype);
    y = x.sum(1) * 0.5 + torch::randn({rows}, g).to(dtype) * 0.1;
    val_x = torch::randn({12, 4}, g).to(dtype);
    val_y = val_x.sum(1) * 0.5;
  }
};

std::vector<torch::Tensor> snapshot(const std::vector<torch::Tensor>& tensors) {
  std::vector<torch::Tensor> out;
  for (const auto& t : tensors) out.push_back(t.detach().clone());
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The non-empty lines of `text` between the line holding `begin` and the next
// line holding `end`, without their leading and trailing blanks.
std::vector<std::string> code_between(const std::string& text, const std::string& begin,
                                      const std::string& end) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  bool inside = false, closed = false;
  while (std::getline(in, line)) {
    if (!inside) {
      inside = line.find(begin) != std::string::npos;
      continue;
    }
    if (line.find(end) != std::string::npos) {
      closed = true;
      break;
    }
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    const auto last = line.find_last_not_of(" \t\r");
    lines.push_back(line.substr(first, last - first + 1));
  }
  if (!inside || !closed)
    throw std::runtime_error("no block between '" + begin + "' and '" + end + "'");
  return lines;
}

// ---------------------------------------------------------------------------
// docs/resuming.md
// ---------------------------------------------------------------------------

struct ResumeOutcome {
  bool finished = false;
  std::vector<torch::Tensor> weights, averages;
  std::string history;
  finetune::LoopPosition position;
};

// One process of a resumable run: `stop_requested` stands for a Ctrl-C flag
// (or throws, standing for a kill); the run saves its state to dir/state.pt.
void resumable_run(const Data& data, const std::string& dir,
                   const std::function<bool()>& stop_requested, ResumeOutcome& out) {
  const torch::Tensor& x = data.x;
  const torch::Tensor& y = data.y;
  const torch::Tensor& val_x = data.val_x;
  const torch::Tensor& val_y = data.val_y;
  // --- docs/resuming.md: begin ---
  torch::manual_seed(42);  // a resumed run builds everything as a fresh one does
  Net model;
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(1e-2));
  const int64_t rows = x.size(0), batch_size = 4, accumulate = 2, epochs = 3;
  const int64_t batches = rows / batch_size;            // per epoch
  const int64_t steps = epochs * batches / accumulate;  // optimizer steps in the run
  const int64_t save_every = 3;                         // optimizer steps
  finetune::SWAScheduler scheduler(
      optimizer,
      std::make_unique<finetune::WarmupLinearSchedule>(
          optimizer, finetune::WarmupLinearScheduleOptions(/*num_warmup_steps=*/2, steps)),
      finetune::SWASchedulerOptions(/*swa_start=*/steps - 4,
                                    finetune::SWALROptions(2e-3).anneal_epochs(2)));
  finetune::SWAWrapper swa(*model);
  finetune::PeriodicEvaluator evaluator(
      finetune::PeriodicEvaluatorOptions(dir).eval_every(2).eval_every_from_epoch(1), *model);
  auto shuffle = at::detail::createCPUGenerator(/*seed_in=*/7);
  torch::Tensor order = torch::arange(rows);  // this epoch's permutation, drawn below
  auto validate = [&] {
    torch::NoGradGuard no_grad;
    model->eval();
    const double rmse = torch::mse_loss(model->forward(val_x), val_y).sqrt().item<double>();
    model->train();
    return rmse;
  };

  // 1. Register every part, in any order.
  finetune::TrainingState state;
  state.add("model", *model).add("optimizer", optimizer).add("scheduler", scheduler);
  state.add("swa", swa, *model, [&] { return scheduler.averaging(); });
  state.add("evaluator", evaluator).add("shuffle", shuffle);
  state.add(
      "order", [&](torch::serialize::OutputArchive& a) { a.write("order", order); },
      [&](torch::serialize::InputArchive& a) { a.read("order", order); });

  // 2. Continue from the state file when there is one.
  const std::string path = dir + "/state.pt";
  if (finetune::TrainingState::exists(path)) state.load(path);

  // 3. The loop, driven by the position: a resumed run starts where it was saved.
  auto& pos = state.position();
  for (; pos.epoch < epochs && !evaluator.should_stop(); state.end_epoch()) {
    if (pos.batch == 0) order = torch::randperm(rows, shuffle);  // else: the saved order
    while (pos.batch < batches) {
      const auto rows_now = order.slice(0, pos.batch * batch_size, (pos.batch + 1) * batch_size);
      const auto loss =
          torch::mse_loss(model->forward(x.index_select(0, rows_now)), y.index_select(0, rows_now));
      (loss / accumulate).backward();
      state.next_batch();
      if (pos.batch % accumulate != 0) continue;  // more micro-batches to accumulate
      const bool taken = finetune::step_if_finite(optimizer);
      optimizer.zero_grad();
      if (state.optimizer_step(taken) && evaluator.step(validate)) break;  // early stop
      // 4. Save right after an optimizer step: no half-accumulated gradients.
      const bool stop = stop_requested();  // e.g. set by a SIGINT handler
      if (pos.optimizer_step % save_every == 0 || stop) state.save(path);
      if (stop) return;
    }
    evaluator.end_epoch(validate);
  }
  state.save(path);  // finished: resuming this state trains no more
  // --- docs/resuming.md: end ---
  out.finished = true;
  out.weights = snapshot(model->parameters());
  for (const auto& [name, t] : swa.named_averages()) out.averages.push_back(t.clone());
  out.history = read_file(evaluator.history_path());
  out.position = pos;
}

ResumeOutcome resumable_run(const Data& data, const std::string& dir,
                            const std::function<bool()>& stop_requested) {
  ResumeOutcome out;
  resumable_run(data, dir, stop_requested, out);
  return out;
}

// ---------------------------------------------------------------------------
// docs/accumulation.md
// ---------------------------------------------------------------------------

struct Batch {
  torch::Tensor x, y;
};

// A loader of unknown length: next() gives batches until the epoch's data
// runs out (std::nullopt); reset() starts the next epoch in a new order.
class Loader {
 public:
  Loader(torch::Tensor x, torch::Tensor y, int64_t batch_size)
      : x_(std::move(x)), y_(std::move(y)), batch_size_(batch_size) {}
  void reset() {
    order_ = torch::randperm(x_.size(0), generator_);
    next_ = 0;
  }
  std::optional<Batch> next() {
    if (next_ >= x_.size(0)) return std::nullopt;
    const auto rows = order_.slice(0, next_, std::min(next_ + batch_size_, x_.size(0)));
    next_ += batch_size_;
    return Batch{x_.index_select(0, rows), y_.index_select(0, rows)};
  }

 private:
  torch::Tensor x_, y_, order_;
  int64_t batch_size_, next_ = 0;
  at::Generator generator_ = at::detail::createCPUGenerator(9);
};

struct AccumulationOutcome {
  std::vector<torch::Tensor> weights, averages;
  finetune::LoopPosition position;
  int64_t scheduler_steps = 0, evaluator_steps = 0, averaged = 0, unfrozen = 0;
  std::vector<double> last_lr;
};

// The run's shape: 44 rows, 3 epochs, SWA over the last steps.
constexpr int64_t kAccumRows = 44, kAccumEpochs = 3;

// The page's loop: `accumulate` micro-batches of `loader` per optimizer step,
// the RMSE of each whole step as the loss.
AccumulationOutcome accumulation_run(Net& model, Loader& loader, int64_t accumulate,
                                     int64_t total_steps, const Data& data,
                                     const std::string& dir) {
  const int64_t epochs = kAccumEpochs, swa_start = total_steps - 4;
  auto validate = [&] {
    torch::NoGradGuard no_grad;
    model->eval();
    const double rmse =
        torch::mse_loss(model->forward(data.val_x), data.val_y).sqrt().item<double>();
    model->train();
    return rmse;
  };
  // --- docs/accumulation.md: begin ---
  // Blocks bottom to top; the head (regressor) always trains. One block thaws per epoch.
  std::vector<std::shared_ptr<torch::nn::Module>> blocks{model->embeddings.ptr()};
  for (const auto& layer : *model->encoder->layer) blocks.push_back(layer);
  finetune::GradualUnfreezing unfreezing(blocks, finetune::GradualUnfreezingOptions(1));
  // Every block has its group and rate from the start, frozen or not.
  finetune::LayerwiseLRGroups<torch::optim::AdamWOptions> llrd(
      *model, finetune::LayerwiseLROptions(1e-2).decay(0.8).include_frozen(true));
  torch::optim::AdamW optimizer(llrd.param_groups(), torch::optim::AdamWOptions(1e-2));
  llrd.apply_to(optimizer);
  finetune::SWAScheduler scheduler(
      optimizer,
      std::make_unique<finetune::WarmupLinearSchedule>(
          optimizer, finetune::WarmupLinearScheduleOptions(/*num_warmup_steps=*/2, total_steps)),
      finetune::SWASchedulerOptions(swa_start, finetune::SWALROptions(2e-3).anneal_epochs(2)));
  finetune::SWAWrapper swa(*model);
  finetune::PeriodicEvaluator evaluator(
      finetune::PeriodicEvaluatorOptions(dir).eval_every(2).eval_every_from_epoch(1), *model);
  auto validate_averaged = [&] {
    auto guard = swa.swap_in(*model);
    return validate();
  };
  auto save_averaged = [&](const std::string& path) {
    auto guard = swa.swap_in(*model);
    finetune::PeriodicEvaluator::module_saver (*model)(path);
  };
  // One call per optimizer step attempt keeps every counter in step.
  finetune::TrainingState state;
  state.add("model", *model).add("optimizer", optimizer).add("scheduler", scheduler);
  state.add("swa", swa, *model, [&] { return scheduler.averaging(); });
  state.add("evaluator", evaluator).add("unfreezing", unfreezing);

  auto& pos = state.position();
  for (; pos.epoch < epochs && !evaluator.should_stop(); state.end_epoch()) {
    loader.reset();
    torch::Tensor squared_error;  // summed over the step's micro-batches
    int64_t rows = 0, micro_batches = 0;
    std::optional<Batch> batch = loader.next();
    while (batch) {
      const auto error = (model->forward(batch->x) - batch->y).pow(2).sum();
      error.backward();  // gradients of the summed squared error
      squared_error = squared_error.defined() ? squared_error + error.detach() : error.detach();
      rows += batch->x.size(0);
      state.next_batch();
      batch = loader.next();  // look ahead: was that the epoch's last micro-batch?
      if (++micro_batches < accumulate && batch) continue;
      // The step's RMSE is sqrt(SSE / rows): its gradient is dSSE / (2 rows RMSE).
      const double rmse = std::sqrt(squared_error.item<double>() / static_cast<double>(rows));
      for (auto& p : model->parameters()) {
        if (p.grad().defined()) p.mutable_grad().div_(2.0 * static_cast<double>(rows) * rmse);
      }
      const bool taken = finetune::step_if_finite(optimizer);  // NaN or inf: skipped
      optimizer.zero_grad();
      squared_error = torch::Tensor();
      rows = micro_batches = 0;
      if (!state.optimizer_step(taken)) continue;  // skipped: nothing else moves
      const bool stop = scheduler.averaging()
                            ? evaluator.step(validate, validate_averaged, save_averaged)
                            : evaluator.step(validate);
      if (stop) break;
    }
    if (scheduler.averaging()) {
      evaluator.end_epoch(validate, validate_averaged, save_averaged);
    } else {
      evaluator.end_epoch(validate);
    }
  }
  // --- docs/accumulation.md: end ---
  AccumulationOutcome out;
  out.weights = snapshot(model->parameters());
  for (const auto& [name, t] : swa.named_averages()) out.averages.push_back(t.clone());
  out.position = pos;
  out.scheduler_steps = scheduler.step_count();
  out.evaluator_steps = evaluator.global_step();
  out.averaged = swa.n_averaged();
  out.unfrozen = unfreezing.unfrozen_blocks();
  out.last_lr = scheduler.get_last_lr();
  return out;
}

// The same run with no accumulation and the RMSE of each batch as the loss
// (autograd's gradient of sqrt(mse)): what the page's loop must equal.
AccumulationOutcome plain_rmse_run(Net& model, Loader& loader, int64_t total_steps) {
  const int64_t swa_start = total_steps - 4;
  std::vector<std::shared_ptr<torch::nn::Module>> blocks{model->embeddings.ptr()};
  for (const auto& layer : *model->encoder->layer) blocks.push_back(layer);
  finetune::GradualUnfreezing unfreezing(blocks, finetune::GradualUnfreezingOptions(1));
  finetune::LayerwiseLRGroups<torch::optim::AdamWOptions> llrd(
      *model, finetune::LayerwiseLROptions(1e-2).decay(0.8).include_frozen(true));
  torch::optim::AdamW optimizer(llrd.param_groups(), torch::optim::AdamWOptions(1e-2));
  llrd.apply_to(optimizer);
  finetune::SWAScheduler scheduler(
      optimizer,
      std::make_unique<finetune::WarmupLinearSchedule>(
          optimizer, finetune::WarmupLinearScheduleOptions(2, total_steps)),
      finetune::SWASchedulerOptions(swa_start, finetune::SWALROptions(2e-3).anneal_epochs(2)));
  finetune::SWAWrapper swa(*model);
  int64_t steps = 0;
  for (int64_t epoch = 0; epoch < kAccumEpochs; ++epoch) {
    loader.reset();
    while (auto batch = loader.next()) {
      torch::mse_loss(model->forward(batch->x), batch->y).sqrt().backward();
      optimizer.step();
      optimizer.zero_grad();
      ++steps;
      scheduler.step();
      if (scheduler.averaging()) swa.update(*model);
    }
    unfreezing.epoch_end();
  }
  AccumulationOutcome out;
  out.weights = snapshot(model->parameters());
  for (const auto& [name, t] : swa.named_averages()) out.averages.push_back(t.clone());
  out.position.optimizer_step = steps;
  out.scheduler_steps = scheduler.step_count();
  out.averaged = swa.n_averaged();
  out.unfrozen = unfreezing.unfrozen_blocks();
  out.last_lr = scheduler.get_last_lr();
  return out;
}

Net fresh_double_model() {
  torch::manual_seed(3);
  Net model(/*dropout=*/0.0);
  model->to(torch::kDouble);
  return model;
}

bool close(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!torch::allclose(a[i], b[i], /*rtol=*/1e-10, /*atol=*/1e-12)) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("docs/resuming.md, accumulation.md and mixed_precision.md show the code these tests run",
          "[docs_loops]") {
  const std::string source =
      read_file(std::string(finetune_test::kSourceDir) + "/tests/test_docs_loops.cpp");
  for (const std::string page : {"resuming", "accumulation", "mixed_precision", "swa"}) {
    INFO("docs/" << page << ".md");
    const auto in_test = code_between(source, "// --- docs/" + page + ".md: begin ---",
                                      "// --- docs/" + page + ".md: end ---");
    const std::string doc =
        read_file(std::string(finetune_test::kSourceDir) + "/docs/" + page + ".md");
    const auto in_doc = code_between(doc, "<!-- tests/test_docs_loops.cpp: begin -->",
                                     "<!-- tests/test_docs_loops.cpp: end -->");
    // The page's block is fenced: drop the fences.
    REQUIRE(in_doc.size() >= 2);
    CHECK(in_doc.front() == "```cpp");
    CHECK(in_doc.back() == "```");
    const std::vector<std::string> code(in_doc.begin() + 1, in_doc.end() - 1);
    REQUIRE(code.size() == in_test.size());
    for (size_t i = 0; i < code.size(); ++i) {
      INFO("line " << i + 1 << " of the block");
      CHECK(code[i] == in_test[i]);
    }
  }
}

TEST_CASE("docs/resuming.md: a run stopped or killed and resumed ends like the uninterrupted run",
          "[docs_loops][resume]") {
  const Data data(40);
  TempDir whole_dir;
  const ResumeOutcome whole = resumable_run(data, whole_dir.path, [] { return false; });
  REQUIRE(whole.finished);
  REQUIRE(whole.position.optimizer_step == 15);
  REQUIRE(!whole.history.empty());

  // Ctrl-C after optimizer step k (the state is saved then), or a kill at
  // step k (nothing saved then: the last periodic save, every 3 steps, is
  // resumed and steps after it are trained again). Steps 5, 10 and 15 end
  // an epoch; SWA starts after step 11.
  struct Case {
    int64_t at;
    bool killed;
  };
  for (const Case c : {Case{1, false}, Case{5, false}, Case{7, false}, Case{12, false},
                       Case{14, false}, Case{5, true}, Case{8, true}, Case{13, true}}) {
    INFO((c.killed ? "killed at" : "stopped after") << " optimizer step " << c.at);
    TempDir dir;
    int64_t calls = 0;
    ResumeOutcome first;
    auto stop = [&] {
      if (++calls < c.at) return false;
      if (c.killed) throw std::runtime_error("killed");
      return true;
    };
    if (c.killed) {
      CHECK_THROWS_WITH(resumable_run(data, dir.path, stop, first), "killed");
    } else {
      resumable_run(data, dir.path, stop, first);
    }
    REQUIRE_FALSE(first.finished);
    REQUIRE(std::filesystem::exists(dir.file("state.pt")));
    const ResumeOutcome resumed = resumable_run(data, dir.path, [] { return false; });
    REQUIRE(resumed.finished);
    CHECK(resumed.position.optimizer_step == whole.position.optimizer_step);
    CHECK(resumed.position.epoch == whole.position.epoch);
    CHECK(resumed.history == whole.history);
    REQUIRE(resumed.weights.size() == whole.weights.size());
    for (size_t i = 0; i < whole.weights.size(); ++i)
      CHECK(torch::equal(resumed.weights[i], whole.weights[i]));
    REQUIRE(resumed.averages.size() == whole.averages.size());
    for (size_t i = 0; i < whole.averages.size(); ++i)
      CHECK(torch::equal(resumed.averages[i], whole.averages[i]));
  }

  // Resuming a finished run trains nothing more.
  const ResumeOutcome again = resumable_run(data, whole_dir.path, [] { return false; });
  CHECK(again.position.optimizer_step == whole.position.optimizer_step);
  for (size_t i = 0; i < whole.weights.size(); ++i)
    CHECK(torch::equal(again.weights[i], whole.weights[i]));
}

TEST_CASE("docs/accumulation.md: K micro-batches train exactly like one batch with the RMSE loss",
          "[docs_loops][accumulation]") {
  const Data data(kAccumRows, torch::kDouble);
  // 11 micro-batches of 4 rows per epoch, 3 per step: steps of 12, 12, 12
  // and 8 rows, against plain batches of 12 rows (12, 12, 12, 8).
  const int64_t total_steps = kAccumEpochs * 4;
  TempDir dir;
  Net model = fresh_double_model();
  Loader loader(data.x, data.y, /*batch_size=*/4);
  const AccumulationOutcome accumulated =
      accumulation_run(model, loader, /*accumulate=*/3, total_steps, data, dir.path);
  Net plain_model = fresh_double_model();
  Loader plain_loader(data.x, data.y, /*batch_size=*/12);
  const AccumulationOutcome plain = plain_rmse_run(plain_model, plain_loader, total_steps);

  CHECK(accumulated.position.optimizer_step == total_steps);
  CHECK(accumulated.position.skipped_steps == 0);
  CHECK(accumulated.position.epoch == kAccumEpochs);
  CHECK(plain.position.optimizer_step == total_steps);
  CHECK(accumulated.scheduler_steps == total_steps);
  CHECK(accumulated.evaluator_steps == total_steps);
  CHECK(accumulated.averaged == 4);
  CHECK(accumulated.unfrozen == plain.unfrozen);
  CHECK(accumulated.unfrozen == 3);
  CHECK(accumulated.last_lr == plain.last_lr);
  CHECK(close(accumulated.weights, plain.weights));
  CHECK(close(accumulated.averages, plain.averages));
  // And the weights did move: the comparison is not between two untrained models.
  Net untrained = fresh_double_model();
  CHECK_FALSE(close(accumulated.weights, snapshot(untrained->parameters())));
}

TEST_CASE("docs/accumulation.md: a step with a NaN is skipped and moves no counter",
          "[docs_loops][accumulation][skipped]") {
  Data data(kAccumRows, torch::kDouble);
  data.x[17][2].fill_(std::nan(""));  // one row: one step per epoch has a NaN gradient
  const int64_t total_steps = kAccumEpochs * 4;
  TempDir dir;
  Net model = fresh_double_model();
  Loader loader(data.x, data.y, 4);
  const AccumulationOutcome out = accumulation_run(model, loader, 3, total_steps, data, dir.path);
  CHECK(out.position.skipped_steps == kAccumEpochs);
  CHECK(out.position.optimizer_step == total_steps - kAccumEpochs);
  CHECK(out.scheduler_steps == out.position.optimizer_step);
  CHECK(out.evaluator_steps == out.position.optimizer_step);
  CHECK(out.unfrozen == 3);  // epochs still end
  for (const auto& w : out.weights) CHECK(torch::isfinite(w).all().item<bool>());
  for (const auto& a : out.averages) CHECK(torch::isfinite(a).all().item<bool>());
}

// ---------------------------------------------------------------------------
// docs/mixed_precision.md
// ---------------------------------------------------------------------------

namespace {

struct MixedPrecisionOutcome {
  finetune::LoopPosition position;
  int64_t scheduler_steps = 0, evaluator_steps = 0, averaged = 0;
  double scale = 0.0;
  std::vector<torch::Tensor> weights, averages;
};

// The page's loop: autocast in `precision` on `device`, GradScaler, LLRD, a
// warm-up schedule then SWA, the evaluator; one optimizer step per batch.
MixedPrecisionOutcome mixed_precision_run(Net& model, Loader& loader, const Data& data,
                                          torch::Device device, torch::ScalarType precision,
                                          int64_t epochs, int64_t total_steps,
                                          const std::string& dir) {
  const int64_t swa_start = total_steps - 6;
  auto validate = [&] {
    torch::NoGradGuard no_grad;
    model->eval();
    const double rmse =
        torch::mse_loss(model->forward(data.val_x.to(device)), data.val_y.to(device))
            .sqrt()
            .item<double>();
    model->train();
    return rmse;
  };
  // --- docs/mixed_precision.md: begin ---
  // Refuses up front what this LibTorch cannot run (fp16 on a CPU without fp16 kernels).
  finetune::check_autocast_supported(device.type(), precision);
  model->to(device);  // the parameters (master weights) stay float32
  finetune::LayerwiseLRGroups<torch::optim::AdamWOptions> llrd(
      *model, finetune::LayerwiseLROptions(1e-2).decay(0.8));
  torch::optim::AdamW optimizer(llrd.param_groups(), torch::optim::AdamWOptions(1e-2));
  llrd.apply_to(optimizer);
  finetune::SWAScheduler scheduler(
      optimizer,
      std::make_unique<finetune::WarmupLinearSchedule>(
          optimizer, finetune::WarmupLinearScheduleOptions(/*num_warmup_steps=*/2, total_steps)),
      finetune::SWASchedulerOptions(swa_start, finetune::SWALROptions(2e-3).anneal_epochs(2)));
  finetune::SWAWrapper swa(*model);
  finetune::PeriodicEvaluator evaluator(finetune::PeriodicEvaluatorOptions(dir).eval_every(3),
                                        *model);
  auto validate_averaged = [&] {
    auto guard = swa.swap_in(*model);
    return validate();
  };
  auto save_averaged = [&](const std::string& path) {
    auto guard = swa.swap_in(*model);
    finetune::PeriodicEvaluator::module_saver (*model)(path);
  };
  // float32: the scaler is off (scale() returns the loss, step() always steps).
  const bool low_precision = precision != torch::kFloat;
  finetune::GradScaler scaler(finetune::GradScalerOptions().enabled(low_precision));
  finetune::TrainingState state;
  state.add("model", *model).add("optimizer", optimizer).add("scheduler", scheduler);
  state.add("swa", swa, *model, [&] { return scheduler.averaging(); });
  state.add("evaluator", evaluator).add("scaler", scaler);  // a resumed run keeps its scale

  auto& pos = state.position();
  for (; pos.epoch < epochs && !evaluator.should_stop(); state.end_epoch()) {
    loader.reset();
    while (auto batch = loader.next()) {
      torch::Tensor loss;
      {
        finetune::compat::AutocastGuard autocast(device.type(), precision, low_precision);
        const torch::Tensor prediction = model->forward(batch->x.to(device));
        loss = torch::mse_loss(prediction.to(torch::kFloat), batch->y.to(device)).sqrt();
      }
      scaler.scale(loss).backward();
      state.next_batch();
      scaler.unscale_(optimizer);  // the true gradients, to clip them
      torch::nn::utils::clip_grad_norm_(model->parameters(), /*max_norm=*/1.0);
      const bool taken = scaler.step(optimizer);  // an inf or NaN gradient: skipped
      scaler.update();
      optimizer.zero_grad();
      // Skipped: no schedule step, no average, no evaluation.
      if (!state.optimizer_step(taken)) continue;
      const bool stop = scheduler.averaging()
                            ? evaluator.step(validate, validate_averaged, save_averaged)
                            : evaluator.step(validate);
      if (stop) break;
    }
    if (scheduler.averaging()) {
      evaluator.end_epoch(validate, validate_averaged, save_averaged);
    } else {
      evaluator.end_epoch(validate);
    }
  }
  // --- docs/mixed_precision.md: end ---
  MixedPrecisionOutcome out;
  out.position = pos;
  out.scheduler_steps = scheduler.step_count();
  out.evaluator_steps = evaluator.global_step();
  out.averaged = swa.n_averaged();
  out.scale = scaler.get_scale();
  out.weights = snapshot(model->parameters());
  for (const auto& [name, t] : swa.named_averages()) out.averages.push_back(t.clone());
  return out;
}

}  // namespace

TEST_CASE("docs/mixed_precision.md: bf16 autocast on CPU; a skipped step moves nothing else",
          "[docs_loops][mixed_precision][skipped]") {
  constexpr int64_t rows = 44, epochs = 3, batch = 4;
  const int64_t total_steps = epochs * (rows / batch);
  Data data(rows);
  data.x[17][2].fill_(std::nan(""));  // one batch per epoch: a NaN loss, skipped
  TempDir dir;
  torch::manual_seed(3);
  Net model(/*dropout=*/0.0);
  Loader loader(data.x, data.y, batch);
  const MixedPrecisionOutcome out = mixed_precision_run(
      model, loader, data, torch::kCPU, torch::kBFloat16, epochs, total_steps, dir.path);
  CHECK(out.position.skipped_steps == epochs);
  CHECK(out.position.optimizer_step == total_steps - epochs);
  // Only steps taken reach the schedule, the averager and the evaluator.
  CHECK(out.scheduler_steps == out.position.optimizer_step);
  CHECK(out.evaluator_steps == out.position.optimizer_step);
  CHECK(out.averaged ==
        out.position.optimizer_step - (total_steps - 6));  // averaging() > swa_start
  // Each skip backed the 2^16 scale off once; no growth within 2000 steps.
  CHECK(out.scale == 65536.0 / 8.0);
  for (const auto& w : out.weights) CHECK(torch::isfinite(w).all().item<bool>());
  for (const auto& a : out.averages) CHECK(torch::isfinite(a).all().item<bool>());
  // The weights are float32 and did train.
  torch::manual_seed(3);
  Net untrained(0.0);
  bool moved = false;
  for (size_t i = 0; i < out.weights.size(); ++i) {
    CHECK(out.weights[i].scalar_type() == torch::kFloat);
    moved = moved || !torch::equal(out.weights[i], untrained->parameters()[i]);
  }
  CHECK(moved);
}

TEST_CASE("docs/mixed_precision.md: fp16 autocast with GradScaler on CUDA",
          "[docs_loops][mixed_precision][cuda]") {
  if (!torch::cuda::is_available()) {
    finetune_test::skip("no CUDA device");
    return;
  }
  constexpr int64_t rows = 44, epochs = 2, batch = 4;
  const int64_t total_steps = epochs * (rows / batch);
  Data data(rows);
  data.x[17][2].fill_(std::nan(""));
  TempDir dir;
  torch::manual_seed(3);
  Net model(/*dropout=*/0.0);
  Loader loader(data.x, data.y, batch);
  const MixedPrecisionOutcome out = mixed_precision_run(
      model, loader, data, torch::kCUDA, torch::kHalf, epochs, total_steps, dir.path);
  CHECK(out.position.skipped_steps >= epochs);
  CHECK(out.position.optimizer_step + out.position.skipped_steps == total_steps);
  CHECK(out.scheduler_steps == out.position.optimizer_step);
  CHECK(out.evaluator_steps == out.position.optimizer_step);
  for (const auto& w : out.weights) CHECK(torch::isfinite(w).all().item<bool>());
}

// ---------------------------------------------------------------------------
// docs/swa.md: the training loop over a LibTorch DataLoader
// ---------------------------------------------------------------------------

namespace {

// A regression net with a BatchNorm, so that update_bn has statistics to redo.
struct BnNetImpl : torch::nn::Module {
  BnNetImpl() {
    register_module("input", input);
    register_module("norm", norm);
    register_module("output", output);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return output(torch::relu(norm(input(x)))).squeeze(-1);
  }
  torch::nn::Linear input{4, 8};
  torch::nn::BatchNorm1d norm{8};
  torch::nn::Linear output{8, 1};
};
TORCH_MODULE(BnNet);

// Data's rows as a LibTorch dataset of Example<>{x, y}.
struct Rows : torch::data::datasets::Dataset<Rows> {
  explicit Rows(const Data& data) : x(data.x), y(data.y) {}
  torch::data::Example<> get(size_t i) override {
    const auto row = static_cast<int64_t>(i);
    return {x[row], y[row]};
  }
  torch::optional<size_t> size() const override { return static_cast<size_t>(x.size(0)); }
  torch::Tensor x, y;
};

struct SwaDocOutcome {
  std::vector<torch::Tensor> weights_after, saved_weights, evaluated_weights;
  int64_t averaged = 0, evaluations = 0, batches_tracked = 0, batches_per_epoch = 0;
};

// The page's loop, over a LibTorch DataLoader (non-const begin()/end()).
SwaDocOutcome swa_doc_run(const Data& data, const std::string& swa_path) {
  torch::manual_seed(4);
  BnNet model;
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(1e-2));
  const int64_t batch_size = 8, epochs = 4;
  auto data_loader =
      torch::data::make_data_loader(Rows(data).map(torch::data::transforms::Stack<>()),
                                    torch::data::DataLoaderOptions(batch_size));
  const int64_t steps_per_epoch = (data.x.size(0) + batch_size - 1) / batch_size;
  const int64_t total_steps = epochs * steps_per_epoch, warmup_steps = 2;
  auto loss = [](BnNet& m, const torch::data::Example<>& batch) {
    return torch::mse_loss(m->forward(batch.data), batch.target);
  };
  SwaDocOutcome out;
  out.batches_per_epoch = steps_per_epoch;
  auto evaluate = [&](BnNet& m) {
    torch::NoGradGuard no_grad;
    ++out.evaluations;
    out.evaluated_weights = snapshot(m->parameters());
    return torch::mse_loss(m->forward(data.val_x), data.val_y).item<double>();
  };
  auto& loader = *data_loader;
  // --- docs/swa.md: begin ---
  const int64_t swa_start = 3 * steps_per_epoch;  // optimizer steps before SWA
  finetune::SWAScheduler scheduler(               // one Scheduler for the run
      optimizer,
      std::make_unique<finetune::WarmupLinearSchedule>(  // lr_schedule.hpp
          optimizer, finetune::WarmupLinearScheduleOptions(warmup_steps, total_steps)),
      finetune::SWASchedulerOptions(swa_start, finetune::SWALROptions(2e-3).anneal_epochs(10)));
  finetune::SWAWrapper swa(*model);  // allocates at its first update
  for (int epoch = 0; epoch < epochs; ++epoch) {
    for (auto& batch : loader) {  // e.g. a LibTorch DataLoader
      optimizer.zero_grad();
      loss(model, batch).backward();
      optimizer.step();
      scheduler.step();                               // after each optimizer step taken
      if (scheduler.averaging()) swa.update(*model);  // the steps after swa_start
    }
  }
  {  // evaluate and save the averaged model: the guard restores the training weights
    auto guard = swa.swap_in(*model);
    finetune::update_bn(*model, loader, [&](auto& b) { model->forward(b.data); });
    model->eval();
    evaluate(model);
    torch::save(model, swa_path);  // a plain checkpoint of your model class
  }
  // --- docs/swa.md: end ---
  out.weights_after = snapshot(model->parameters());
  out.averaged = swa.n_averaged();
  BnNet saved;
  torch::load(saved, swa_path);
  out.saved_weights = snapshot(saved->parameters());
  out.batches_tracked = saved->norm->num_batches_tracked.item<int64_t>();
  return out;
}

}  // namespace

TEST_CASE("docs/swa.md: the loop averages over a DataLoader, update_bn runs over it too",
          "[docs_loops][swa]") {
  const Data data(40);
  TempDir dir;
  const SwaDocOutcome out = swa_doc_run(data, dir.path + "/swa.pt");
  CHECK(out.averaged == out.batches_per_epoch);  // the last epoch's steps
  CHECK(out.evaluations == 1);
  // The evaluation and the checkpoint saw the averages; the training weights came back.
  REQUIRE(out.evaluated_weights.size() == out.saved_weights.size());
  for (size_t i = 0; i < out.saved_weights.size(); ++i) {
    CHECK(torch::equal(out.evaluated_weights[i], out.saved_weights[i]));
  }
  CHECK_FALSE(close(out.weights_after, out.saved_weights));
  // update_bn went over the loader once: one count per batch.
  CHECK(out.batches_tracked == out.batches_per_epoch);
}
