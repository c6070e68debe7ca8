# Settings for finetune's own tests, examples and benchmarks. Consumers of the
# finetune::finetune target never see any of this.

# --- Sanitizers (FINETUNE_SANITIZE=ON: the `make test` stage "sanitize") -----
# AddressSanitizer + UndefinedBehaviorSanitizer for every project target and
# the shared PCH (one set of flags, so the PCH stays reusable); any UB report
# aborts the test. LibTorch itself is not instrumented. See docs/fuzzing.md.
option(FINETUNE_SANITIZE "Build the project's own targets with ASan + UBSan (gcc or clang)" OFF)
if(FINETUNE_SANITIZE)
  # GCC 12's -Wmaybe-uninitialized gives false positives on instrumented code
  # (std::regex's std::function here), which -Werror would make fatal.
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>)
  add_link_options(-fsanitize=address,undefined)
endif()

# --- Warnings and the precompiled header --------------------------------------
# Strict warnings for the project's own code; LibTorch's headers come in as
# system headers and are not held to them.
function(finetune_strict_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Werror)
endfunction()

# One precompiled <torch/torch.h> shared by every test, example and benchmark
# target: parsing it is most of the build time on two cores.
add_library(finetune_pch OBJECT "${PROJECT_SOURCE_DIR}/cmake/pch.cpp")
target_link_libraries(finetune_pch PRIVATE finetune::finetune)
finetune_strict_warnings(finetune_pch)
target_precompile_headers(finetune_pch PRIVATE <torch/torch.h>)

# Makes `target` a project target: strict warnings, the shared PCH, finetune.
function(finetune_project_target target)
  target_link_libraries(${target} PRIVATE finetune::finetune)
  finetune_strict_warnings(${target})
  target_precompile_headers(${target} REUSE_FROM finetune_pch)
endfunction()
