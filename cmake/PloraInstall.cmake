# Installs the headers and an exported package so that an installed plora is
# consumed with find_package(plora CONFIG REQUIRED) + plora::plora / plora::io.
include(CMakePackageConfigHelpers)
install(DIRECTORY include/plora DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
set(plora_installed_targets plora plora_io)
if(TARGET plora_text)
  list(APPEND plora_installed_targets plora_text)
endif()
if(TARGET plora_cuda)
  list(APPEND plora_installed_targets plora_cuda)
endif()
install(TARGETS ${plora_installed_targets} EXPORT ploraTargets)
install(EXPORT ploraTargets NAMESPACE plora:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/plora)
configure_package_config_file(cmake/ploraConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/ploraConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/plora)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/ploraConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/ploraConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/ploraConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/plora)
