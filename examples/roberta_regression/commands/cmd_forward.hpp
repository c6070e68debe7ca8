// `roberta_regression forward`: run a converted checkpoint on given inputs and
// write its outputs, to compare with Hugging Face's.
#pragma once

#include <fmt/core.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

#include "model/model_names.hpp"
#include "model/roberta_model.hpp"
#include "model/safetensors.hpp"

namespace roberta_regression {

/// forward (--model DIR | --config C --weights W) --inputs I --out O
/// [--device cpu|cuda]: DIR holds config.json and model.safetensors of either
/// family (model_type "roberta" or "bert"); I holds `input_ids` (int64 [B, T])
/// and `attention_mask` ([B, T]), and optionally `token_type_ids` (int64
/// [B, T]; type 0 without); O gets `last_hidden_state` and `pooler_output`
/// (float32), in eval mode.
inline void add_forward_command(CLI::App& app) {
  struct Args {
    std::string model, config, weights, inputs, out, device = "cpu";
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "forward",
      "RobertaModel / BertModel outputs of a config.json + model.safetensors on given inputs");
  auto* config = cmd->add_option("--config", args->config, "Hugging Face config.json");
  auto* weights = cmd->add_option("--weights", args->weights, "model.safetensors");
  cmd->add_option(
         "--model", args->model,
         "folder with config.json and model.safetensors (roberta or bert), or \"minilm\", instead "
         "of --config and --weights")
      ->excludes(config)
      ->excludes(weights);
  cmd->add_option("--inputs", args->inputs, "safetensors with input_ids and attention_mask")
      ->required();
  cmd->add_option("--out", args->out, "safetensors to write")->required();
  cmd->add_option("--device", args->device)
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->callback([args] {
    const torch::Device device = device_from_flag(args->device);
    if (!args->model.empty()) {
      const std::filesystem::path dir = resolve_model_dir(args->model);
      args->config = (dir / "config.json").string();
      args->weights = (dir / "model.safetensors").string();
    } else if (args->config.empty() || args->weights.empty()) {
      throw std::invalid_argument("forward: give --model DIR, or both --config and --weights");
    }
    const RobertaConfig config = RobertaConfig::from_json_file(args->config);
    RobertaModel model(config);
    const LoadReport report = load_safetensors_weights(*model, args->weights);
    fmt::print(stderr, "forward: {}: {}\n", args->weights, report.summary());
    model->to(device);
    model->eval();

    torch::Tensor ids, mask, types;
    for (const auto& [name, tensor] : read_safetensors(args->inputs).tensors) {
      if (name == "input_ids") ids = tensor;
      if (name == "attention_mask") mask = tensor;
      if (name == "token_type_ids") types = tensor;
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
    if (types.defined()) {
      if (types.scalar_type() != torch::kInt64 || types.sizes() != ids.sizes())
        throw std::invalid_argument(args->inputs +
                                    ": \"token_type_ids\" must be I64 of input_ids' shape");
      const auto [tlo, thi] = types.aminmax();
      if (tlo.item<int64_t>() < 0 || thi.item<int64_t>() >= config.type_vocab_size)
        throw std::invalid_argument(args->inputs +
                                    ": \"token_type_ids\" outside [0, type_vocab_size = " +
                                    std::to_string(config.type_vocab_size) + ")");
      types = types.to(device);
    }

    torch::NoGradGuard no_grad;
    const RobertaOutput out = model->forward(ids.to(device), mask.to(device), types);
    write_safetensors(args->out, {{"last_hidden_state", out.last_hidden_state.to(torch::kFloat32)},
                                  {"pooler_output", out.pooler_output.to(torch::kFloat32)}});
    fmt::print("forward: wrote {} (last_hidden_state {}x{}x{})\n", args->out, ids.size(0),
               ids.size(1), config.hidden_size);
  });
}

}  // namespace roberta_regression
