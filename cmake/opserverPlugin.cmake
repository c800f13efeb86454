# How an opserver plugin is built, shared by the source tree (ops_add_plugin in the root
# CMakeLists.txt) and installed SDKs (find_package(opserver) includes this file), so that
# a plugin built outside the tree is built exactly like the standard ones.

# The properties every plugin gets: a "lib<name>.so" MODULE, C++20, hidden visibility
# (its only own exports are ops_plugin_entry and ops_plugin_stamp), no undefined symbols
# (a missing one fails the link, not the server's start), and the SDK's symbols kept out
# of the export table so that two plugins never bind to each other's copy.
function(opserver_plugin_properties target sdk)
  set_target_properties(${target} PROPERTIES
    PREFIX "lib"
    POSITION_INDEPENDENT_CODE ON
    CXX_STANDARD 20 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF
    CXX_VISIBILITY_PRESET hidden C_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  target_link_libraries(${target} PRIVATE ${sdk})
  target_link_options(${target} PRIVATE -Wl,--no-undefined -Wl,--exclude-libs,ALL)
  # GCC marks function-local statics of inline code (rapidjson's tables, <charconv>'s) as
  # STB_GNU_UNIQUE, and glibc never unloads a library that has one: a plugin replaced or
  # removed by a reload would stay mapped for ever. With hidden visibility and RTLD_LOCAL
  # the plugin's copies are its own anyway.
  target_compile_options(${target} PRIVATE $<$<CXX_COMPILER_ID:GNU>:-fno-gnu-unique>)
endfunction()

# opserver_add_plugin(<name> <source>...): target <name>_plugin, file lib<name>.so, linked
# to the installed SDK (opserver::sdk). Copy the .so into the server's plugin directory.
function(opserver_add_plugin name)
  if(NOT TARGET opserver::sdk)
    message(FATAL_ERROR "opserver_add_plugin: call find_package(opserver) first")
  endif()
  add_library(${name}_plugin MODULE ${ARGN})
  set_target_properties(${name}_plugin PROPERTIES OUTPUT_NAME ${name})
  opserver_plugin_properties(${name}_plugin opserver::sdk)
endfunction()
