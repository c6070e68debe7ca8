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
  // The last key is padding: it must not be attended to.
  const auto keep = torch::tensor({true, true, false}).reshape({1, 1, 1, 3});
  if (finetune::compat::kHasScaledDotProductAttention) {
    namespace idx = torch::indexing;
    const auto out = finetune::compat::scaled_dot_product_attention(q, k, v, keep, 0.0);
    CHECK(out.sizes() == q.sizes());
    // Same as attending to the first two keys only, and not the same as attending to all three.
    const auto first_two = idx::Slice(0, 2);
    const auto without_padding = finetune::compat::scaled_dot_product_attention(
        q, k.index({idx::Slice(), idx::Slice(), first_two}),
        v.index({idx::Slice(), idx::Slice(), first_two}), torch::ones({1, 1, 1, 2}, torch::kBool),
        0.0);
    CHECK(torch::allclose(out, without_padding, 1e-6, 1e-6));
    const auto all = finetune::compat::scaled_dot_product_attention(
        q, k, v, torch::ones({1, 1, 1, 3}, torch::kBool), 0.0);
    CHECK((out - all).abs().max().item<double>() > 1e-3);
  } else {
    CHECK_THROWS_AS(finetune::compat::scaled_dot_product_attention(q, k, v, keep, 0.0),
                    std::logic_error);
  }
}
