# Settings for finetune's own tests, examples and benchmarks. Consumers of the
# finetune::finetune target never see any of this.

# --- LibTorch from the PyPI wheel --------------------------------------------
# The CUDA wheel's libtorch_cuda.so finds its CUDA libraries (NCCL, cuDNN, ...)
# through an $ORIGIN rpath into site-packages/nvidia/*/lib. The linker does not
# follow that rpath when it resolves indirect dependencies, so a CUDA toolkit
# on the system path (an older NCCL, say) wins and linking fails. Point the
# linker at the wheel's own copies. Nothing changes at run time.
set(FINETUNE_TORCH_LINK_DIRS "")
if(DEFINED TORCH_INSTALL_PREFIX AND EXISTS "${TORCH_INSTALL_PREFIX}/../nvidia")
  file(GLOB _finetune_nvidia_libs LIST_DIRECTORIES true "${TORCH_INSTALL_PREFIX}/../nvidia/*/lib")
  list(APPEND FINETUNE_TORCH_LINK_DIRS ${_finetune_nvidia_libs})
endif()
if(FINETUNE_TORCH_LINK_DIRS)
  string(REPLACE ";" ":" _finetune_rpath_link "${FINETUNE_TORCH_LINK_DIRS}")
  set(FINETUNE_TORCH_LINKER_FLAGS "-Wl,-rpath-link,${_finetune_rpath_link}")
  add_link_options("LINKER:-rpath-link,${_finetune_rpath_link}")
else()
  set(FINETUNE_TORCH_LINKER_FLAGS "")
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
