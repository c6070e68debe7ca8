# Settings for finetune's own tests, examples and benchmarks. Consumers of the
# finetune::finetune target never see any of this.

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
