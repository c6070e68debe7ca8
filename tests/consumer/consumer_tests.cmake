# Consumer tests: finetune used the three ways users take it.
#   (a) installed, then find_package(finetune) from an outside project;
#   (b) vendored with add_subdirectory, and with FetchContent;
#   (c) "copy a single header": each public header compiles on its own.
# Outside projects are configured and built by `ctest --build-and-test`, with
# the same compiler, build type and LibTorch as this build, and nothing a user
# would not pass: no linker flags (finetune::finetune carries what the wheel needs).

set(_consumer_dir "${CMAKE_CURRENT_SOURCE_DIR}/consumer")
set(_consumer_bin "${CMAKE_CURRENT_BINARY_DIR}/consumer")
set(_staging "${_consumer_bin}/staging")
set(_torch_options
  "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}"
  "-DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE}"
  "-DTorch_DIR=${Torch_DIR}"
  "-DCMAKE_PREFIX_PATH=${TORCH_INSTALL_PREFIX}")

if(FINETUNE_INSTALL)
  add_test(NAME consumer_install
    COMMAND "${CMAKE_COMMAND}" --install "${PROJECT_BINARY_DIR}" --prefix "${_staging}")
  set_tests_properties(consumer_install PROPERTIES FIXTURES_SETUP finetune_installed LABELS consumer)

  add_test(NAME consumer_find_package
    COMMAND "${CMAKE_CTEST_COMMAND}" --build-and-test
      "${_consumer_dir}/find_package" "${_consumer_bin}/find_package"
      --build-generator "${CMAKE_GENERATOR}"
      --build-options ${_torch_options} "-Dfinetune_DIR=${_staging}/${FINETUNE_CMAKE_INSTALL_DIR}"
      --test-command consumer)
  set_tests_properties(consumer_find_package PROPERTIES
    FIXTURES_REQUIRED finetune_installed LABELS consumer)
endif()

foreach(mode add_subdirectory FetchContent)
  add_test(NAME consumer_${mode}
    COMMAND "${CMAKE_CTEST_COMMAND}" --build-and-test
      "${_consumer_dir}/add_subdirectory" "${_consumer_bin}/${mode}"
      --build-generator "${CMAKE_GENERATOR}"
      --build-options ${_torch_options}
        "-DFINETUNE_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
        "-DFINETUNE_CONSUMER_MODE=${mode}"
        "-DFETCHCONTENT_SOURCE_DIR_FINETUNE=${PROJECT_SOURCE_DIR}"
      --test-command consumer)
  set_tests_properties(consumer_${mode} PROPERTIES LABELS consumer)
endforeach()

# (c) Each technique header is copied with only the finetune headers it
# includes itself (compat.hpp; scheduler.hpp for the schedules; the headers
# training_state.hpp composes), found by following its #include lines, into
# an empty folder and compiled in a translation unit of its own, with nothing
# but LibTorch and the standard library on the include path: what a user who
# copies that header needs is what it names. The umbrella header is staged
# with the whole include tree.
file(GLOB _public_headers CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/include/finetune/*.hpp")
foreach(header IN LISTS _public_headers)
  get_filename_component(header_name "${header}" NAME)
  get_filename_component(stem "${header}" NAME_WE)
  set(stage "${_consumer_bin}/single_header/${stem}")
  if(header_name STREQUAL "finetune.hpp")
    set(staged_from ${_public_headers})
  else()
    set(staged_from "${header}")
    set(_todo "${header}")
    while(_todo)
      list(POP_FRONT _todo _current)
      # Configure again when a header's #include lines may have changed.
      set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${_current}")
      file(STRINGS "${_current}" _includes REGEX "^#include [<\"]finetune/[a-z_]+\\.hpp[>\"]")
      foreach(_line IN LISTS _includes)
        string(REGEX REPLACE "^#include [<\"]finetune/([a-z_]+\\.hpp)[>\"].*" "\\1" _name "${_line}")
        set(_path "${PROJECT_SOURCE_DIR}/include/finetune/${_name}")
        if(NOT _path IN_LIST staged_from)
          list(APPEND staged_from "${_path}")
          list(APPEND _todo "${_path}")
        endif()
      endforeach()
    endwhile()
  endif()
  # Copied at build time, so an edited header is checked again.
  set(staged "")
  foreach(source IN LISTS staged_from)
    get_filename_component(source_name "${source}" NAME)
    add_custom_command(OUTPUT "${stage}/finetune/${source_name}"
      COMMAND "${CMAKE_COMMAND}" -E copy "${source}" "${stage}/finetune/${source_name}"
      DEPENDS "${source}" VERBATIM)
    list(APPEND staged "${stage}/finetune/${source_name}")
  endforeach()
  # Included twice: the second time checks the include guard.
  file(WRITE "${stage}/tu.cpp"
    "#include \"finetune/${header_name}\"\n#include \"finetune/${header_name}\"\n")
  add_library(single_header_${stem} OBJECT EXCLUDE_FROM_ALL "${stage}/tu.cpp" ${staged})
  target_include_directories(single_header_${stem} PRIVATE "${stage}")
  target_link_libraries(single_header_${stem} PRIVATE torch)
  target_compile_features(single_header_${stem} PRIVATE cxx_std_17)
  finetune_strict_warnings(single_header_${stem})
  add_test(NAME single_header_${stem}
    COMMAND "${CMAKE_COMMAND}" --build "${PROJECT_BINARY_DIR}" --target single_header_${stem})
  # Builds in one tree must not run concurrently.
  set_tests_properties(single_header_${stem} PROPERTIES LABELS consumer RESOURCE_LOCK build_tree)
endforeach()
