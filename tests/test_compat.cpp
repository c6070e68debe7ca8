// compat.hpp: the version guard agrees with the LibTorch actually linked.
#include <finetune/compat.hpp>
#include <finetune/version.hpp>

#include <torch/torch.h>

#include <stdexcept>
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

TEST_CASE("compat::scaled_dot_product_attention: LibTorch 2.x's fused attention, an error on 1.13",
          "[compat]") {
  const std::string version = finetune::compat::torch_version();
  CHECK(finetune::compat::kHasScaledDotProductAttention == (std::stoi(version) >= 2));
  const auto q = torch::randn({1, 2, 3, 4}), k = torch::randn({1, 2, 3, 4}),
             v = torch::randn({1, 2, 3, 4});
  const auto keep = torch::ones({1, 1, 1, 3}, torch::kBool);
  if (finetune::compat::kHasScaledDotProductAttention) {
    CHECK(finetune::compat::scaled_dot_product_attention(q, k, v, keep, 0.0).sizes() == q.sizes());
  } else {
    CHECK_THROWS_AS(finetune::compat::scaled_dot_product_attention(q, k, v, keep, 0.0),
                    std::logic_error);
  }
}
