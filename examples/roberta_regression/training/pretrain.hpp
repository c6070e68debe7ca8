// Masked-language-model pretraining of a small RoBERTa: how the demo's
// embedded model was made (`roberta_regression pretrain`). Example code.
#pragma once

#include <torch/torch.h>

#include <finetune/lr_schedule.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/roberta_config.hpp"
#include "model/roberta_model.hpp"
#include "text/tokenizer.hpp"

namespace roberta_regression {

/// Settings of a pretraining run. Defaults are the demo model's recipe.
struct PretrainOptions {
  int64_t hidden_size = 128;
  int64_t num_hidden_layers = 4;
  int64_t num_attention_heads = 4;
  int64_t intermediate_size = 512;
  int64_t max_length = 128;  ///< tokens per sequence, <s> and </s> included
  int64_t batch_size = 32;
  int64_t steps = 6000;
  double lr = 1e-3;
  double warmup_fraction = 0.06;  ///< RoBERTa's recipe: 6% warm-up, then linear decay
  double weight_decay = 0.01;
  double mask_probability = 0.15;
  int64_t seed = 3377;
  int64_t log_every = 100;
};

/// One line of the pretraining log.
struct PretrainLogEntry {
  int64_t step;
  double loss;             ///< mean masked-token cross-entropy over the last log_every steps
  double masked_accuracy;  ///< fraction of masked tokens predicted exactly
  double lr;
};

/// Cuts every text's BPE ids into windows of max_length - 2 and wraps each in
/// `<s> ... </s>`, padding the last window: all the text is seen, none is
/// truncated away. Returns {input_ids, attention_mask}, int64 [N, max_length].
std::pair<torch::Tensor, torch::Tensor> pack_mlm_windows(RobertaTokenizer& tokenizer,
                                                         const std::vector<std::string>& texts,
                                                         int64_t max_length);

/// Hugging Face's DataCollatorForLanguageModeling: each real, non-special token
/// is chosen with `probability`; of those 80% become <mask>, 10% a random id,
/// 10% stay. Returns {masked input_ids, labels (-100 where not chosen)}.
std::pair<torch::Tensor, torch::Tensor> mask_tokens(const torch::Tensor& input_ids,
                                                    const torch::Tensor& attention_mask,
                                                    const RobertaTokenizer& tokenizer,
                                                    double probability,
                                                    torch::Generator& generator);

/// Trains a fresh RobertaForMaskedLM on `texts` with AdamW (betas 0.9/0.98,
/// eps 1e-6, RoBERTa's) and warm-up + linear decay; calls `on_log` every
/// log_every steps. Returns the trained model and its config.
std::pair<RobertaForMaskedLM, RobertaConfig> pretrain_mlm(
    RobertaTokenizer& tokenizer, const std::vector<std::string>& texts,
    const PretrainOptions& options, torch::Device device,
    const std::function<void(const PretrainLogEntry&)>& on_log);

// --- implementation -----------------------------------------------------------

inline std::pair<torch::Tensor, torch::Tensor> pack_mlm_windows(
    RobertaTokenizer& tokenizer, const std::vector<std::string>& texts, int64_t max_length) {
  if (max_length < 3) throw std::invalid_argument("pretrain: --max-length must be at least 3");
  const int64_t body = max_length - 2;
  std::vector<int64_t> ids, mask;
  for (const auto& text : texts) {
    const std::vector<int64_t> tokens = tokenizer.tokenize(text);
    for (size_t start = 0; start < tokens.size(); start += static_cast<size_t>(body)) {
      const size_t end = std::min(tokens.size(), start + static_cast<size_t>(body));
      ids.push_back(tokenizer.bos_token_id());
      ids.insert(ids.end(), tokens.begin() + static_cast<std::ptrdiff_t>(start),
                 tokens.begin() + static_cast<std::ptrdiff_t>(end));
      ids.push_back(tokenizer.eos_token_id());
      const int64_t used = static_cast<int64_t>(end - start) + 2;
      mask.insert(mask.end(), static_cast<size_t>(used), 1);
      ids.insert(ids.end(), static_cast<size_t>(max_length - used), tokenizer.pad_token_id());
      mask.insert(mask.end(), static_cast<size_t>(max_length - used), 0);
    }
  }
  const int64_t n = static_cast<int64_t>(ids.size()) / max_length;
  if (n == 0) throw std::invalid_argument("pretrain: no text to train on");
  return {torch::tensor(ids, torch::kInt64).view({n, max_length}),
          torch::tensor(mask, torch::kInt64).view({n, max_length})};
}

inline std::pair<torch::Tensor, torch::Tensor> mask_tokens(const torch::Tensor& input_ids,
                                                           const torch::Tensor& attention_mask,
                                                           const RobertaTokenizer& tokenizer,
                                                           double probability,
                                                           torch::Generator& generator) {
  const auto options = torch::TensorOptions().device(input_ids.device());
  const auto special = (input_ids == tokenizer.bos_token_id()) |
                       (input_ids == tokenizer.eos_token_id()) | (attention_mask == 0);
  auto draw = [&] { return torch::rand(input_ids.sizes(), generator, options); };
  const auto chosen = (draw() < probability) & ~special;
  auto labels = torch::where(chosen, input_ids, torch::full_like(input_ids, -100));
  const auto to_mask = chosen & (draw() < 0.8);
  const auto to_random = chosen & ~to_mask & (draw() < 0.5);
  auto masked =
      torch::where(to_mask, torch::full_like(input_ids, tokenizer.mask_token_id()), input_ids);
  const auto random_ids = torch::randint(tokenizer.vocab_size(), input_ids.sizes(), generator,
                                         options.dtype(torch::kInt64));
  masked = torch::where(to_random, random_ids, masked);
  return {masked, labels};
}

inline std::pair<RobertaForMaskedLM, RobertaConfig> pretrain_mlm(
    RobertaTokenizer& tokenizer, const std::vector<std::string>& texts, const PretrainOptions& o,
    torch::Device device, const std::function<void(const PretrainLogEntry&)>& on_log) {
  if (o.steps <= 0 || o.batch_size <= 0 || o.log_every <= 0)
    throw std::invalid_argument("pretrain: --steps, --batch-size and --log-every must be positive");
  if (!(o.mask_probability > 0.0 && o.mask_probability < 1.0))
    throw std::invalid_argument("pretrain: --mask-probability must lie in (0, 1)");
  if (o.hidden_size % o.num_attention_heads != 0)
    throw std::invalid_argument("pretrain: --hidden-size must be a multiple of --heads");

  torch::manual_seed(static_cast<uint64_t>(o.seed));
  auto [all_ids, all_mask] = pack_mlm_windows(tokenizer, texts, o.max_length);
  // The windows stay on the host; like a data loader, each step masks a batch
  // there and copies it over, so nothing waits on the device.
  const int64_t n = all_ids.size(0);

  RobertaConfig config;
  config.vocab_size = tokenizer.vocab_size();
  config.hidden_size = o.hidden_size;
  config.num_hidden_layers = o.num_hidden_layers;
  config.num_attention_heads = o.num_attention_heads;
  config.intermediate_size = o.intermediate_size;
  config.max_position_embeddings = o.max_length + 2;  // RoBERTa's positions start after pad
  config.pad_token_id = tokenizer.pad_token_id();
  config.bos_token_id = tokenizer.bos_token_id();
  config.eos_token_id = tokenizer.eos_token_id();

  RobertaForMaskedLM model(config);
  model->to(device);
  model->train();

  // No weight decay for biases and LayerNorm weights, as in fine-tuning.
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    const bool exempt = name.find("bias") != std::string::npos ||
                        name.find("LayerNorm") != std::string::npos ||
                        name.find("layer_norm") != std::string::npos;
    (exempt ? no_decay : decay).push_back(item.value());
  }
  const auto defaults = torch::optim::AdamWOptions(o.lr).betas({0.9, 0.98}).eps(1e-6);
  auto group_options = [&](double weight_decay) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(defaults).weight_decay(weight_decay));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, group_options(o.weight_decay));
  groups.emplace_back(no_decay, group_options(0.0));
  torch::optim::AdamW optimizer(std::move(groups), defaults);
  // LibTorch 2.x replaces group options equal to the defaults; set them again.
  optimizer.param_groups()[0].set_options(group_options(o.weight_decay));
  optimizer.param_groups()[1].set_options(group_options(0.0));
  const auto warmup =
      static_cast<int64_t>(std::floor(o.warmup_fraction * static_cast<double>(o.steps)));
  finetune::WarmupLinearSchedule schedule(optimizer,
                                          finetune::WarmupLinearScheduleOptions(warmup, o.steps));

  auto generator = torch::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(o.seed));
  auto order = torch::randperm(n, generator, torch::kInt64);
  int64_t cursor = 0;
  // Accumulated on the device; read once per log line (one sync per log_every steps).
  auto loss_sum = torch::zeros({}, torch::TensorOptions().device(device).dtype(torch::kFloat64));
  auto correct = torch::zeros_like(loss_sum), total = torch::zeros_like(loss_sum);
  for (int64_t step = 0; step < o.steps; ++step) {
    if (cursor + o.batch_size > n) {  // a new epoch: reshuffle, drop the ragged tail
      order = torch::randperm(n, generator, torch::kInt64);
      cursor = 0;
    }
    const auto rows = order.slice(0, cursor, cursor + std::min(o.batch_size, n));
    cursor += o.batch_size;
    const auto host_mask = all_mask.index_select(0, rows);
    auto [masked, labels] = mask_tokens(all_ids.index_select(0, rows), host_mask, tokenizer,
                                        o.mask_probability, generator);
    // Logits only at the chosen positions (15% of them): the vocabulary
    // projection dominates otherwise. Indices found on the host, no sync.
    const auto flat_host_labels = labels.view({-1});
    const auto chosen_host = flat_host_labels.ne(-100).nonzero().squeeze(1);
    const auto chosen = chosen_host.to(device);
    const auto chosen_labels = flat_host_labels.index_select(0, chosen_host).to(device);
    const auto mask = host_mask.to(device);

    const auto hidden = model->roberta->forward(masked.to(device), mask).last_hidden_state;
    const auto logits =
        model->logits(hidden.reshape({-1, config.hidden_size}).index_select(0, chosen));
    const auto loss = torch::nn::functional::cross_entropy(logits, chosen_labels);
    optimizer.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    optimizer.step();
    schedule.step();

    {
      torch::NoGradGuard no_grad;
      loss_sum += loss.detach().to(torch::kFloat64);
      correct += logits.argmax(-1).eq(chosen_labels).sum().to(torch::kFloat64);
      total += static_cast<double>(chosen_host.size(0));
    }
    if ((step + 1) % o.log_every == 0 || step + 1 == o.steps) {
      const int64_t span = (step + 1) % o.log_every == 0 ? o.log_every : (step + 1) % o.log_every;
      on_log({step + 1, loss_sum.item<double>() / static_cast<double>(span),
              correct.item<double>() / std::max(1.0, total.item<double>()),
              schedule.get_last_lr().front()});
      loss_sum.zero_();
      correct.zero_();
      total.zero_();
    }
  }
  model->eval();
  return {model, config};
}

}  // namespace roberta_regression
