# `cmake --install`: the server, the client, the plugins, an installed configuration, the
# docs, the systemd unit, and the plugin SDK (headers, libopsdk.a, find_package(opserver),
# opserver-sdk.pc). docs/OPERATING.md "Install layout" lists the result.
include(CMakePackageConfigHelpers)

# bin/ and the plugins (ops_add_plugin installs each plugin into OPS_INSTALL_PLUGINDIR).
# opserver-plugin-host beside opserver: the server finds its worker host next to itself.
install(TARGETS opserver opserver-plugin-host opclient RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# Paths the installed configuration points at, fixed when configuring (the prefix given to
# `cmake --install --prefix` later cannot change a file's contents). With the prefix /usr
# (the Debian package), GNUInstallDirs makes these /etc/opserver and /var/lib/opserver.
set(OPS_INSTALL_CONFDIR ${CMAKE_INSTALL_FULL_SYSCONFDIR}/opserver)
set(OPS_INSTALL_STATEDIR ${CMAKE_INSTALL_FULL_LOCALSTATEDIR}/lib/opserver)
set(OPS_INSTALL_FULL_PLUGINDIR ${CMAKE_INSTALL_PREFIX}/${OPS_INSTALL_PLUGINDIR})
# Where the files go: /etc/opserver itself for /usr, else etc/opserver under the prefix
# (so that `cmake --install build --prefix /tmp/x` stays inside /tmp/x).
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(OPS_CONF_DESTINATION ${OPS_INSTALL_CONFDIR})
else()
  set(OPS_CONF_DESTINATION ${CMAKE_INSTALL_SYSCONFDIR}/opserver)
endif()

# etc/opserver/{server,ops}.json: the shipped config/*.json with the development paths
# (../var/, ../build/plugins) replaced by the installed ones. Made from the very same files so
# that every default stays the same; a path that is not found is a build error.
function(ops_installed_config source output)
  file(READ ${source} text)
  set(pairs ${ARGN})
  while(pairs)
    list(POP_FRONT pairs from to)
    string(FIND "${text}" "\"${from}\"" at)
    if(at EQUAL -1)
      message(FATAL_ERROR "${source}: no \"${from}\" to replace for the installed configuration")
    endif()
    string(REPLACE "\"${from}\"" "\"${to}\"" text "${text}")
  endwhile()
  # No pid file when installed: systemd knows the main pid (ExecReload signals it), and
  # `opserver reload --pid-file` works wherever an operator sets one.
  string(REGEX REPLACE "\n *\"pid_file\": *\"[^\"]*\"," "" text "${text}")
  # configure_file's sibling for text in hand: rewrites the output only when it changes.
  file(CONFIGURE OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/${output} CONTENT "${text}" @ONLY)
endfunction()
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
             ${CMAKE_SOURCE_DIR}/config/server.json ${CMAKE_SOURCE_DIR}/config/ops.json)
# (Relative paths in the shipped files are taken from config/, the files' own directory.)
ops_installed_config(${CMAKE_SOURCE_DIR}/config/server.json installed/server.json
  ../var/storage ${OPS_INSTALL_STATEDIR}/storage
  ../var/state ${OPS_INSTALL_STATEDIR}/state
  ops.json ${OPS_INSTALL_CONFDIR}/ops.json)
ops_installed_config(${CMAKE_SOURCE_DIR}/config/ops.json installed/ops.json
  ../build/plugins ${OPS_INSTALL_FULL_PLUGINDIR})
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/installed/server.json
              ${CMAKE_CURRENT_BINARY_DIR}/installed/ops.json
        DESTINATION ${OPS_CONF_DESTINATION})

# The systemd unit (packaging/opserver.service.in) with the installed paths.
configure_file(${CMAKE_SOURCE_DIR}/packaging/opserver.service.in
               ${CMAKE_CURRENT_BINARY_DIR}/installed/opserver.service @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/installed/opserver.service
        DESTINATION lib/systemd/system)

install(FILES README.md docs/OPERATING.md docs/PROTOCOL.md docs/PLUGINS.md docs/CLIENT.md
              docs/OPERATIONS.md docs/ARCHITECTURE.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY examples/hello_plugin DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
# Exec plugins (docs/PLUGINS.md, "Operations in any language"): the examples, and the Python helper where
# Debian's python3 imports it from (/usr/lib/python3/dist-packages for the prefix /usr).
install(PROGRAMS examples/exec/wordcount.py examples/exec/hello.sh
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples/exec)
install(FILES sdk/python/opserver_plugin.py DESTINATION lib/python3/dist-packages)

# The SDK: headers, libopsdk.a, and the targets find_package(opserver) imports.
install(DIRECTORY sdk/include/opserver DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS opsdk ops_rapidjson EXPORT opserverTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
set(OPS_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/opserver)
install(EXPORT opserverTargets NAMESPACE opserver:: DESTINATION ${OPS_CMAKE_DIR})
configure_package_config_file(cmake/opserverConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/installed/opserverConfig.cmake
  INSTALL_DESTINATION ${OPS_CMAKE_DIR} PATH_VARS OPS_INSTALL_PLUGINDIR)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/installed/opserverConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/installed/opserverConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/installed/opserverConfigVersion.cmake
              cmake/opserverPlugin.cmake
        DESTINATION ${OPS_CMAKE_DIR})

# opserver-sdk.pc, relocatable: its prefix is found from its own directory.
file(RELATIVE_PATH OPS_PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" OPS_PC_TO_PREFIX "${OPS_PC_TO_PREFIX}")
configure_file(cmake/opserver-sdk.pc.in ${CMAKE_CURRENT_BINARY_DIR}/installed/opserver-sdk.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/installed/opserver-sdk.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
