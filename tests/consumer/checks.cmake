# Checks shared by the outside projects (find_package, add_subdirectory,
# FetchContent), included once `consumer` links finetune::finetune.

# Consumers never inherit finetune's own warning flags...
get_target_property(finetune_options finetune::finetune INTERFACE_COMPILE_OPTIONS)
if(finetune_options MATCHES "Werror|Wall")
  message(FATAL_ERROR "finetune::finetune leaks warning flags to consumers: ${finetune_options}")
endif()
# ...but its headers must stay clean under a strict consumer's flags.
target_compile_options(consumer PRIVATE -Wall -Wextra -Wpedantic -Werror)

# With LibTorch from the PyPI wheel, finetune::finetune alone makes the link
# take the wheel's CUDA libraries: these projects pass no linker flags. The link
# itself fails only where another NCCL is on the system search path (a CUDA
# toolkit's), so require the option here too, on every machine.
get_filename_component(wheel_nccl "${TORCH_INSTALL_PREFIX}/../nvidia/nccl/lib" ABSOLUTE)
if(IS_DIRECTORY "${wheel_nccl}")
  get_target_property(finetune_link_options finetune::finetune INTERFACE_LINK_OPTIONS)
  string(FIND "${finetune_link_options}" "${wheel_nccl}" nccl_at)
  if(nccl_at EQUAL -1 OR NOT finetune_link_options MATCHES "-rpath-link,")
    message(FATAL_ERROR "finetune::finetune does not point the linker at the wheel's "
                        "${wheel_nccl} (INTERFACE_LINK_OPTIONS: ${finetune_link_options})")
  endif()
endif()
