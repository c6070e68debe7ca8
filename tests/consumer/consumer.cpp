// A user's program: it takes finetune through the package (find_package,
// add_subdirectory or FetchContent) and composes all five techniques in its
// own training loop. The README's example is this file's main().
#include <torch/torch.h>
#include <finetune/finetune.hpp>

#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

// A tiny encoder with Hugging Face's names: embeddings., encoder.layer.{i}.,
// pooler., regressor.
struct EncoderImpl : torch::nn::Module {
  EncoderImpl() { register_module("layer", layer); }
  torch::nn::ModuleList layer{torch::nn::Linear(8, 8), torch::nn::Linear(8, 8),
                              torch::nn::Linear(8, 8), torch::nn::Linear(8, 8)};
};
TORCH_MODULE(Encoder);

struct TinyRegressorImpl : torch::nn::Module {
  TinyRegressorImpl() {
    register_module("embeddings", embeddings);
    register_module("encoder", encoder);
    register_module("pooler", pooler);
    register_module("regressor", regressor);
  }
  torch::Tensor forward(const torch::Tensor& ids) {
    auto h = embeddings(ids).mean(1);
    for (const auto& block : *encoder->layer)
      h = torch::gelu(block->as<torch::nn::Linear>()->forward(h));
    return regressor(torch::tanh(pooler(h))).squeeze(-1);
  }
  torch::nn::Embedding embeddings{100, 8};
  Encoder encoder;
  torch::nn::Linear pooler{8, 8};
  torch::nn::Linear regressor{8, 1};
};
TORCH_MODULE(TinyRegressor);

int main() {
  torch::manual_seed(0);
  TinyRegressor model;
  const auto ids = torch::randint(0, 100, {64, 6});
  const auto target = (ids.to(torch::kFloat).mean(1) - 50.0) / 10.0;  // learnable from the ids
  const int64_t epochs = 4, batches = 8, batch_size = 8, swa_start_epoch = 3;

  // --- README example -------------------------------------------------------
  // Re-initialize the top 2 blocks and the pooler (Zhang et al. 2021).
  finetune::ReinitTopLayers(finetune::ReinitTopLayersOptions(2).seed(42))(
      model->encoder->layer, {{"pooler", model->pooler.ptr()}});

  // Layer-wise learning rates: top block 3.5e-3, x0.9 per block down, head 3.6e-3.
  finetune::LayerwiseLRGroups<torch::optim::AdamWOptions> llrd(
      *model, finetune::LayerwiseLROptions(3.5e-3).decay(0.9).head_lr(3.6e-3));
  torch::optim::AdamW optimizer(llrd.param_groups(), torch::optim::AdamWOptions(3.5e-3));
  llrd.apply_to(optimizer);  // LibTorch 2.x overwrites group options equal to the defaults

  // Warm-up, then linear decay; from epoch 3 SWALR and averaged weights (SWA).
  finetune::SWAScheduler scheduler(
      optimizer,
      std::make_unique<finetune::WarmupLinearSchedule>(
          optimizer, finetune::WarmupLinearScheduleOptions(/*warmup=*/4, epochs * batches)),
      finetune::SWASchedulerOptions(/*swa_start=*/swa_start_epoch * batches,
                                    finetune::SWALROptions(2e-3).anneal_epochs(4)));
  finetune::SWAWrapper swa(*model);

  // Evaluate every 4 batches from epoch 1 on, keep the best checkpoint.
  const auto dir = std::filesystem::current_path() / "checkpoints";
  std::filesystem::create_directories(dir);
  finetune::PeriodicEvaluator evaluator(
      finetune::PeriodicEvaluatorOptions(dir.string()).eval_every(4).eval_every_from_epoch(1),
      *model);
  auto validate = [&] {
    torch::NoGradGuard no_grad;
    model->eval();
    const double rmse = torch::sqrt(torch::mse_loss(model(ids), target)).item<double>();
    model->train();
    return rmse;
  };

  auto validate_averaged = [&] {
    auto averaged = swa.swap_in(*model);
    return validate();
  };
  auto save_averaged = [&](const std::string& path) {
    auto averaged = swa.swap_in(*model);
    torch::save(model, path);
  };

  for (int64_t epoch = 0; epoch < epochs && !evaluator.should_stop(); ++epoch) {
    for (int64_t i = 0; i < batches; ++i) {
      const auto rows = torch::arange(i * batch_size, (i + 1) * batch_size);
      const auto loss =
          torch::sqrt(torch::mse_loss(model(ids.index({rows})), target.index({rows})));
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      scheduler.step();  // once per optimizer step: warm-up/decay, then SWALR
      if (scheduler.averaging()) swa.update(*model);
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
  // --- end of README example -------------------------------------------------

  std::cout << "finetune " << FINETUNE_VERSION_MAJOR << '.' << FINETUNE_VERSION_MINOR << '.'
            << FINETUNE_VERSION_PATCH << " on LibTorch " << finetune::compat::torch_version()
            << ": " << evaluator.num_evaluations() << " evaluations, best RMSE " << evaluator.best()
            << ", SWA averaged " << swa.n_averaged() << " steps\n";
  // The loop really ran every technique.
  return evaluator.num_evaluations() > 0 && swa.n_averaged() > 0 ? 0 : 1;
}
