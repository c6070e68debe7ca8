# Install rules and the package config, so that an installed finetune is found
# with find_package(finetune CONFIG REQUIRED).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(FINETUNE_CMAKE_INSTALL_DIR "${CMAKE_INSTALL_DATADIR}/cmake/finetune"
    CACHE STRING "Where finetuneConfig.cmake is installed")

install(TARGETS finetune EXPORT finetuneTargets)
install(DIRECTORY include/finetune DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(FILES LICENSE DESTINATION "${CMAKE_INSTALL_DATADIR}/doc/finetune")

install(EXPORT finetuneTargets
  NAMESPACE finetune::
  DESTINATION "${FINETUNE_CMAKE_INSTALL_DIR}")
export(EXPORT finetuneTargets
  NAMESPACE finetune::
  FILE "${PROJECT_BINARY_DIR}/finetuneTargets.cmake")

# The config includes it from its own folder, installed or in the build tree.
configure_file("${PROJECT_SOURCE_DIR}/cmake/finetuneTorchWheel.cmake"
  "${PROJECT_BINARY_DIR}/finetuneTorchWheel.cmake" COPYONLY)
configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/finetuneConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/finetuneConfig.cmake"
  INSTALL_DESTINATION "${FINETUNE_CMAKE_INSTALL_DIR}")
# Header-only: the version file does not depend on the architecture.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/finetuneConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion
  ARCH_INDEPENDENT)
install(FILES
  "${PROJECT_BINARY_DIR}/finetuneConfig.cmake"
  "${PROJECT_BINARY_DIR}/finetuneConfigVersion.cmake"
  "${PROJECT_BINARY_DIR}/finetuneTorchWheel.cmake"
  DESTINATION "${FINETUNE_CMAKE_INSTALL_DIR}")
