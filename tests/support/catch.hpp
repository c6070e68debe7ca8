// Include this instead of Catch2 directly: it works with Debian's Catch2 v2
// and with v3. Use REQUIRE/CHECK, REQUIRE_THROWS_*, REQUIRE_THAT with
// Catch::Matchers::WithinRel/WithinAbs: those are spelled the same in both.
#pragma once

#include "test_config.hpp"

#if FINETUNE_CATCH2_V3
#include <catch2/catch_all.hpp>
#else
#if defined(FINETUNE_CATCH_MAIN_TU)
#define CATCH_CONFIG_MAIN
#endif
#include <catch2/catch.hpp>
#endif

#include <string>

namespace finetune_test {
/// Matcher: the string contains `part` (Catch2 v3 renamed Contains).
inline auto HasSubstring(const std::string& part) {
#if FINETUNE_CATCH2_V3
  return Catch::Matchers::ContainsSubstring(part);
#else
  return Catch::Matchers::Contains(part);
#endif
}
}  // namespace finetune_test
