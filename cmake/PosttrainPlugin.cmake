# posttrain_add_plugin(<name> SOURCES a.cc [b.cc ...] [LIBRARIES ...] [OUTPUT_DIRECTORY dir])
#
# Builds a posttrain plugin: a shared library with hidden visibility that exports
# exactly one symbol (posttrain_plugin_entry, made by POSTTRAIN_PLUGIN in a source).
# Used in-tree for the built-in plugins and, through find_package(posttrain), by
# third parties. The host loads it from a directory listed in a recipe's
# `plugin_dirs`, in POSTTRAIN_PLUGIN_PATH, or from its built-in plugin directory.
set(_POSTTRAIN_PLUGIN_MAP "${CMAKE_CURRENT_LIST_DIR}/posttrain_plugin.map")

function(posttrain_add_plugin name)
  cmake_parse_arguments(ARG "" "OUTPUT_DIRECTORY" "SOURCES;LIBRARIES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "posttrain_add_plugin(${name}): SOURCES is required")
  endif()
  add_library(${name} MODULE ${ARG_SOURCES})
  if(TARGET posttrain::framework)
    target_link_libraries(${name} PRIVATE posttrain::framework ${ARG_LIBRARIES})
  else()
    target_link_libraries(${name} PRIVATE posttrain_framework ${ARG_LIBRARIES})
  endif()
  # Hidden visibility hides our own code; the version script also hides template
  # instantiations of the standard library and Boost, so exactly one symbol is exported.
  target_link_options(${name} PRIVATE "LINKER:--version-script=${_POSTTRAIN_PLUGIN_MAP}")
  set_target_properties(${name} PROPERTIES
    LINK_DEPENDS "${_POSTTRAIN_PLUGIN_MAP}"
    PREFIX "lib"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIRECTORY})
  endif()
endfunction()
