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
