// `roberta_regression forward`: run a converted checkpoint on given inputs and
// write its outputs, to compare with Hugging Face's.
#pragma once

#include <fmt/core.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <memory>
#include <stdexcept>
#include <string>

#include "model/roberta_model.hpp"
#include "model/safetensors.hpp"

namespace roberta_regression {

/// forward --config C --weights W --inputs I --out O [--device cpu|cuda]:
/// I holds `input_ids` (int64 [B, T]) and `attention_mask` ([B, T]); O gets
/// `last_hidden_state` and `pooler_output` (float32), in eval mode.
inline void add_forward_command(CLI::App& app) {
  struct Args {
    std::string config, weights, inputs, out, device = "cpu";
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "forward", "RobertaModel outputs of a config.json + model.safetensors on given inputs");
  cmd->add_option("--config", args->config, "Hugging Face config.json")->required();
  cmd->add_option("--weights", args->weights, "model.safetensors")->required();
  cmd->add_option("--inputs", args->inputs, "safetensors with input_ids and attention_mask")
      ->required();
  cmd->add_option("--out", args->out, "safetensors to write")->required();
  cmd->add_option("--device", args->device)
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->callback([args] {
    if (args->device == "cuda" && !torch::cuda::is_available())
      throw std::invalid_argument("--device cuda: no CUDA device is available");
    const torch::Device device(args->device == "cuda" ? torch::kCUDA : torch::kCPU);
    const RobertaConfig config = RobertaConfig::from_json_file(args->config);
    RobertaModel model(config);
    const LoadReport report = load_safetensors_weights(*model, args->weights);
    fmt::print(stderr, "forward: {}: {}\n", args->weights, report.summary());
    model->to(device);
    model->eval();

    torch::Tensor ids, mask;
    for (const auto& [name, tensor] : read_safetensors(args->inputs).tensors) {
      if (name == "input_ids") ids = tensor;
      if (name == "attention_mask") mask = tensor;
    }
    if (!ids.defined() || !mask.defined())
      throw std::invalid_argument(args->inputs +
                                  ": needs tensors \"input_ids\" and \"attention_mask\"");
    if (ids.scalar_type() != torch::kInt64)
      throw std::invalid_argument(args->inputs + ": \"input_ids\" must be I64");
    if (ids.dim() != 2 || mask.sizes() != ids.sizes())
      throw std::invalid_argument(
          args->inputs + ": \"input_ids\" and \"attention_mask\" must both be [batch, tokens]");
    const auto [lo, hi] = ids.aminmax();
    if (lo.item<int64_t>() < 0 || hi.item<int64_t>() >= config.vocab_size)
      throw std::invalid_argument(args->inputs + ": \"input_ids\" outside [0, vocab_size = " +
                                  std::to_string(config.vocab_size) + ")");

    torch::NoGradGuard no_grad;
    const RobertaOutput out = model->forward(ids.to(device), mask.to(device));
    write_safetensors(args->out, {{"last_hidden_state", out.last_hidden_state.to(torch::kFloat32)},
                                  {"pooler_output", out.pooler_output.to(torch::kFloat32)}});
    fmt::print("forward: wrote {} (last_hidden_state {}x{}x{})\n", args->out, ids.size(0),
               ids.size(1), config.hidden_size);
  });
}

}  // namespace roberta_regression
