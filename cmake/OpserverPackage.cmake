# The Debian package (CPack's DEB generator; scripts/package builds it in build-package/).
# Configure with -DCMAKE_INSTALL_PREFIX=/usr so that the installed configuration and the
# unit name /usr/bin, /etc/opserver and /var/lib/opserver.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME opserver)
set(CPACK_PACKAGE_VENDOR "opserver")
set(CPACK_PACKAGE_CONTACT "opserver maintainers <opserver@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "plugin-based operation server speaking OPS/1")
set(CPACK_PACKAGE_DESCRIPTION
    "opserver runs operations from plugin .so files on behalf of authenticated users,\n"
    "over the framed-JSON protocol OPS/1 (mutual HMAC-SHA256 login, optional TLS).\n"
    "Includes the server, opclient, the standard plugins, a hardened systemd unit,\n"
    "and the plugin SDK (headers, static library, CMake and pkg-config files).")
string(REPLACE ";" "" CPACK_PACKAGE_DESCRIPTION "${CPACK_PACKAGE_DESCRIPTION}")
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
# /etc/opserver is an absolute destination: staged under DESTDIR like everything else.
set(CPACK_SET_DESTDIR ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Runtime libraries from dpkg-shlibdeps (libssl3, libsystemd0, libstdc++6, ...);
# adduser for postinst; init-system-helpers for deb-systemd-helper and -invoke.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser, init-system-helpers")
# Maintainer scripts, and the configuration files dpkg must keep across upgrades.
set(OPS_DEB_CONTROL ${CMAKE_CURRENT_BINARY_DIR}/debian-control)
file(MAKE_DIRECTORY ${OPS_DEB_CONTROL})
file(WRITE ${OPS_DEB_CONTROL}/conffiles
     "${OPS_INSTALL_CONFDIR}/server.json\n${OPS_INSTALL_CONFDIR}/ops.json\n")
foreach(script postinst prerm postrm)
  file(COPY ${CMAKE_SOURCE_DIR}/packaging/debian/${script} DESTINATION ${OPS_DEB_CONTROL})
endforeach()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${OPS_DEB_CONTROL}/conffiles ${OPS_DEB_CONTROL}/postinst ${OPS_DEB_CONTROL}/prerm
    ${OPS_DEB_CONTROL}/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
