// The Catch2 entry point, compiled once and linked into every test executable:
// Catch2's session, then exit status 77 (CTest's SKIP_RETURN_CODE) when a test
// case called finetune_test::skip() and nothing failed.
#define FINETUNE_CATCH_MAIN_TU
#include "catch.hpp"

int main(int argc, char* argv[]) {
  const int failed = Catch::Session().run(argc, argv);
  // Catch2 returns the number of failures (capped): never let it read as a skip.
  if (failed != 0) return 1;
  if (finetune_test::skip_count() > 0) {
    std::fprintf(stderr, "%d skip(s), no failure: exit status %d\n", finetune_test::skip_count(),
                 finetune_test::kSkipReturnCode);
    return finetune_test::kSkipReturnCode;
  }
  return 0;
}
