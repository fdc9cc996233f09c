# cmake --install: the `sparseflow` command and the seed's names for it (sparseflow-convert,
# sparseflow-benchmark, sparseflow-audit: symlinks that the binary dispatches on, src/cli/argv0.hpp),
# libsparseflow.so with its C headers, a CMake package (find_package(SparseFlow), imported target
# SparseFlow::sparseflow), a pkg-config file, and the shipped table of measured results.
# docs/INSTALL.md shows how to use each.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(SPARSEFLOW_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/SparseFlow)
set(SPARSEFLOW_COMMAND_ALIASES convert benchmark audit)

if(TARGET sparseflow_cli)
  # An installed binary finds libsparseflow (if it links it) and share/sparseflow beside itself.
  # Libraries linked from outside the system's paths (cuSPARSELt from a Python wheel, say) stay
  # findable after installing: their directories are kept in the installed RPATH as well.
  set_target_properties(sparseflow_cli PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}"
    INSTALL_RPATH_USE_LINK_PATH ON)
  install(TARGETS sparseflow_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  # The same symlinks in the build tree (BUILD/aliases/sparseflow-audit), for use without installing.
  set(sf_alias_files "")
  foreach(alias IN LISTS SPARSEFLOW_COMMAND_ALIASES)
    set(link ${CMAKE_CURRENT_BINARY_DIR}/aliases/sparseflow-${alias})
    list(APPEND sf_alias_files ${link})
    install(CODE "
      set(sf_link \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}/sparseflow-${alias}\")
      message(STATUS \"Installing: \${sf_link} -> sparseflow\")
      file(CREATE_LINK sparseflow \"\${sf_link}\" SYMBOLIC)")
  endforeach()
  add_custom_target(sparseflow_aliases ALL
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_CURRENT_BINARY_DIR}/aliases
    COMMAND ${CMAKE_COMMAND} -E create_symlink $<TARGET_FILE:sparseflow_cli> ${CMAKE_CURRENT_BINARY_DIR}/aliases/sparseflow-convert
    COMMAND ${CMAKE_COMMAND} -E create_symlink $<TARGET_FILE:sparseflow_cli> ${CMAKE_CURRENT_BINARY_DIR}/aliases/sparseflow-benchmark
    COMMAND ${CMAKE_COMMAND} -E create_symlink $<TARGET_FILE:sparseflow_cli> ${CMAKE_CURRENT_BINARY_DIR}/aliases/sparseflow-audit
    DEPENDS sparseflow_cli
    COMMENT "Linking sparseflow-{convert,benchmark,audit} -> sparseflow in ${CMAKE_CURRENT_BINARY_DIR}/aliases"
    VERBATIM)
endif()

# The shipped measurements that `sparseflow audit` reads (src/audit/measurements.hpp).
install(DIRECTORY ${PROJECT_SOURCE_DIR}/data/measured DESTINATION ${CMAKE_INSTALL_DATADIR}/sparseflow
        FILES_MATCHING PATTERN "*.json")

# Public headers: the C ABI and its thin C++ wrapper.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/sparseflow DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h" PATTERN "*.hpp")

if(TARGET sparseflow_shared)
  # Consumers see SparseFlow::sparseflow; its include directory is the installed one.
  set_target_properties(sparseflow_shared PROPERTIES EXPORT_NAME sparseflow)
  get_target_property(sf_shared_includes sparseflow_shared INTERFACE_INCLUDE_DIRECTORIES)
  if(NOT "${sf_shared_includes}" MATCHES "INSTALL_INTERFACE")
    target_include_directories(sparseflow_shared INTERFACE $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  endif()
  set_target_properties(sparseflow_shared PROPERTIES INSTALL_RPATH_USE_LINK_PATH ON)
  install(TARGETS sparseflow_shared EXPORT SparseFlowTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  install(EXPORT SparseFlowTargets NAMESPACE SparseFlow:: FILE SparseFlowTargets.cmake
    DESTINATION ${SPARSEFLOW_INSTALL_CMAKEDIR})

  configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/SparseFlowConfig.cmake.in
    ${PROJECT_BINARY_DIR}/SparseFlowConfig.cmake
    INSTALL_DESTINATION ${SPARSEFLOW_INSTALL_CMAKEDIR} PATH_VARS CMAKE_INSTALL_INCLUDEDIR)
  # The C ABI only grows within a major version (include/sparseflow/sparseflow.h).
  write_basic_package_version_file(${PROJECT_BINARY_DIR}/SparseFlowConfigVersion.cmake
    VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
  install(FILES ${PROJECT_BINARY_DIR}/SparseFlowConfig.cmake ${PROJECT_BINARY_DIR}/SparseFlowConfigVersion.cmake
    DESTINATION ${SPARSEFLOW_INSTALL_CMAKEDIR})

  # pkg-config: paths relative to the .pc file itself, so `cmake --install --prefix P` for any P works.
  if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
    set(SF_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  else()
    set(SF_PC_PREFIX "\${pcfiledir}")
    string(REPLACE "/" ";" sf_pc_parts "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
    foreach(unused IN LISTS sf_pc_parts)
      string(APPEND SF_PC_PREFIX "/..")
    endforeach()
  endif()
  configure_file(${PROJECT_SOURCE_DIR}/cmake/sparseflow.pc.in ${PROJECT_BINARY_DIR}/sparseflow.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/sparseflow.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endif()
