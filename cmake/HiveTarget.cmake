# hive_target_defaults(<target>): the compile settings every target of ours gets.
#  - warnings are errors on our code; third-party headers come in as SYSTEM (imported targets)
#  - CAF_ENABLE_TYPE_ID_CHECKS turns a message type without a type ID into a compile error
#  - the project root is the include root: #include "runtime/supervisor.hpp"
#  - assertions stay on in every build type (programmer errors abort, also in Release)
function(hive_target_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror)
  target_compile_definitions(${target} PUBLIC CAF_ENABLE_TYPE_ID_CHECKS)
  target_compile_options(${target} PRIVATE -UNDEBUG)
endfunction()

# hive_library(<name> <folder-lib-deps...> SOURCES ...): one library per top-level folder.
function(hive_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC "${PROJECT_SOURCE_DIR}")
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  hive_target_defaults(${name})
endfunction()
