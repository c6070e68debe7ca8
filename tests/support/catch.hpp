// Include this instead of Catch2 directly: it works with Debian's Catch2 v2
// and with v3. Use REQUIRE/CHECK, REQUIRE_THROWS_*, REQUIRE_THAT with
// Catch::Matchers::WithinRel/WithinAbs: those are spelled the same in both;
// finetune_test::skip() to skip visibly (not Catch2 v3's SKIP, absent in v2).
#pragma once

#include "test_config.hpp"

#if FINETUNE_CATCH2_V3
#include <catch2/catch_all.hpp>
#else
#if defined(FINETUNE_CATCH_MAIN_TU)
#define CATCH_CONFIG_RUNNER  // main() is ours (catch_main.cpp): it reports skips
#endif
#include <catch2/catch.hpp>
#endif

#include <cstdio>
#include <string>

namespace finetune_test {

/// The exit status of a test executable in which a test case skipped and
/// none failed; tests/CMakeLists.txt gives every test SKIP_RETURN_CODE 77,
/// so CTest reports it as "Skipped" rather than passed.
inline constexpr int kSkipReturnCode = 77;

/// How many times skip() was called in this process.
inline int& skip_count() {
  static int count = 0;
  return count;
}

/// Marks the running test case skipped because of `why` (the caller returns
/// right after): the executable then exits with kSkipReturnCode unless
/// something failed. Only for what a machine may lack (a CUDA device); a
/// prerequisite the build provides (the example's binary, the venv's Python)
/// is a REQUIRE, so that its absence fails.
inline void skip(const std::string& why) {
  ++skip_count();
  WARN("SKIPPED: " << why);
  std::fprintf(stderr, "SKIPPED: %s\n", why.c_str());
}

/// Matcher: the string contains `part` (Catch2 v3 renamed Contains).
inline auto HasSubstring(const std::string& part) {
#if FINETUNE_CATCH2_V3
  return Catch::Matchers::ContainsSubstring(part);
#else
  return Catch::Matchers::Contains(part);
#endif
}
}  // namespace finetune_test
