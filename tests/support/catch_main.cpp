// The Catch2 entry point, compiled once and linked into every test executable.
#define FINETUNE_CATCH_MAIN_TU
#include "catch.hpp"  // defines main() for Catch2 v2; v3 brings its own
