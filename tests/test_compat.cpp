// compat.hpp: the version guard agrees with the LibTorch actually linked.
#include <finetune/compat.hpp>
#include <finetune/version.hpp>

#include <torch/torch.h>

#include <string>

#include "catch.hpp"

TEST_CASE("FINETUNE_TORCH_AT_LEAST matches the LibTorch version in use", "[compat]") {
  const std::string version = finetune::compat::torch_version();
  const int major = std::stoi(version.substr(0, version.find('.')));
  const int minor = std::stoi(version.substr(version.find('.') + 1));
  CHECK(major == TORCH_VERSION_MAJOR);
  CHECK(minor == TORCH_VERSION_MINOR);
  CHECK(FINETUNE_TORCH_AT_LEAST(1, 13));
  CHECK(FINETUNE_TORCH_AT_LEAST(TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR));
  CHECK_FALSE(FINETUNE_TORCH_AT_LEAST(TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR + 1));
  CHECK_FALSE(FINETUNE_TORCH_AT_LEAST(TORCH_VERSION_MAJOR + 1, 0));
}
