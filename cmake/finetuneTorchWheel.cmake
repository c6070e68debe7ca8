# Linking against LibTorch from the PyPI wheel, for finetune::finetune's users.
# Included by finetune's CMakeLists.txt (add_subdirectory, FetchContent) and by
# the installed finetuneConfig.cmake, so that it is computed from the LibTorch
# the user found, on the user's machine.
#
# The CUDA wheel's libtorch_cuda.so finds NCCL, cuDNN, cuBLAS, ... through its
# RPATH $ORIGIN/../../nvidia/*/lib (site-packages/nvidia/*/lib). GNU ld does not
# follow that RPATH when it resolves a shared library's own dependencies: it
# takes the first libnccl.so.2 on the system search path instead, for example
# an older one in a CUDA toolkit's lib folder, and the link fails with undefined
# ncclCommResume, ncclCommGrow, ... `-rpath-link` to the wheel's folders points
# the linker at the copies the wheel loads at run time. Nothing changes at run
# time (the executable gets no new RPATH).
#
# A system LibTorch (Debian's libtorch-dev, a libtorch zip) has no
# ../nvidia/*/lib next to it and gets nothing.

include_guard(GLOBAL)

# _finetune_torch_prefix(<out_var>): the LibTorch found in the calling scope,
# its install prefix (<prefix>/lib/libtorch.so), or "".
function(_finetune_torch_prefix out_var)
  set(prefix "${TORCH_INSTALL_PREFIX}")
  if(prefix STREQUAL "" AND TARGET torch)
    # TorchConfig.cmake sets TORCH_INSTALL_PREFIX in the scope that found it;
    # from elsewhere, go by the library itself (<prefix>/lib/libtorch.so).
    get_target_property(library torch IMPORTED_LOCATION)
    if(library)
      get_filename_component(prefix "${library}/../.." ABSOLUTE)
    endif()
  endif()
  set(${out_var} "${prefix}" PARENT_SCOPE)
endfunction()

# finetune_torch_wheel_link_options(<out_var>)
# Sets <out_var> to the link options for the LibTorch found in the calling scope
# (TORCH_INSTALL_PREFIX, else the `torch` target's library folder): one
# "LINKER:-rpath-link,<dir>:<dir>..." with the wheel's existing nvidia/*/lib
# folders, or an empty list for a LibTorch that is not the wheel.
function(finetune_torch_wheel_link_options out_var)
  _finetune_torch_prefix(prefix)
  set(options "")
  if(NOT prefix STREQUAL "")
    get_filename_component(nvidia "${prefix}/../nvidia" ABSOLUTE)
    if(IS_DIRECTORY "${nvidia}")
      file(GLOB candidates LIST_DIRECTORIES true "${nvidia}/*/lib")
      set(dirs "")
      foreach(dir IN LISTS candidates)
        if(IS_DIRECTORY "${dir}")
          list(APPEND dirs "${dir}")
        endif()
      endforeach()
      if(dirs)
        list(SORT dirs)
        string(REPLACE ";" ":" joined "${dirs}")
        set(options "LINKER:-rpath-link,${joined}")
      endif()
    endif()
  endif()
  set(${out_var} "${options}" PARENT_SCOPE)
endfunction()

# finetune_torch_wheel_nccl_include(<out_var>)
# Sets <out_var> to the wheel's NCCL include folder (site-packages/nvidia/nccl/
# include, the nccl.h of the libnccl that the wheel loads) when the LibTorch
# found is the CUDA wheel, else to "". With it, distributed.hpp is compiled
# with FINETUNE_WITH_NCCL: c10d's ProcessGroupNCCL for CUDA devices. A
# CUDA toolkit's own nccl.h may be older than the library the wheel runs.
function(finetune_torch_wheel_nccl_include out_var)
  _finetune_torch_prefix(prefix)
  set(include "")
  if(NOT prefix STREQUAL "" AND EXISTS "${prefix}/lib/libtorch_cuda.so")
    get_filename_component(candidate "${prefix}/../nvidia/nccl/include" ABSOLUTE)
    if(EXISTS "${candidate}/nccl.h")
      set(include "${candidate}")
    endif()
  endif()
  set(${out_var} "${include}" PARENT_SCOPE)
endfunction()
