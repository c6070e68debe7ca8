// Helpers of the tests that run the example's `train` as a process
// (test_roberta_resume, test_roberta_distributed): a small CSV it learns from,
// and what a training state file (fold<k>/state.pt) holds.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace finetune_test {

/// `rows` CommonLit-shaped rows: even rows say "alpha" (target about 1), odd
/// rows "beta" (about -1). Returns `path`.
inline std::string write_passages_csv(const std::string& path, int rows) {
  std::ofstream out(path);
  out << "id,url_legal,license,excerpt,target,standard_error\n";
  for (int i = 0; i < rows; ++i) {
    const bool high = i % 2 == 0;
    out << "row" << i << ",,,\"Passage " << i << ", which says " << (high ? "alpha" : "beta")
        << " and again " << (high ? "alpha" : "beta") << ".\","
        << (high ? 1.0 : -1.0) + 0.01 * (i % 7) << ",0.5\n";
  }
  return path;
}

/// The optimizer step a state file was saved at, or -1 without one.
inline int64_t saved_step(const std::string& state) {
  if (!std::filesystem::exists(state)) return -1;
  torch::serialize::InputArchive archive;
  archive.load_from(state);
  c10::IValue step;
  archive.read("position_optimizer_step", step);
  return step.toInt();
}

/// The tensors of a part of a state file: "t<i>" of a module, or
/// "swa_average_<i>" of an averager.
inline std::vector<torch::Tensor> part_tensors(const std::string& state, const std::string& part,
                                               const std::string& prefix) {
  torch::serialize::InputArchive archive, sub;
  archive.load_from(state);
  archive.read("part_" + part, sub);
  std::vector<torch::Tensor> out;
  for (int i = 0;; ++i) {
    torch::Tensor t;
    std::string key = prefix;
    key += std::to_string(i);
    if (!sub.try_read(key, t)) break;
    out.push_back(t);
  }
  return out;
}

}  // namespace finetune_test
