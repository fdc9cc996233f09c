# cmake -DBUILD_DIR=.. -DCONSUMER_DIR=.. -DWORK=.. -DLIBDIR=lib -DC_COMPILER=cc -DGENERATOR=.. -P install_consumer.cmake
file(REMOVE_RECURSE "${WORK}")
set(prefix "${WORK}/prefix")

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (exit ${rc}):\n${ARGN}\n${out}\n${err}")
  endif()
  set(out "${out}" PARENT_SCOPE)
endfunction()

# 1. Install.
run("cmake --install" "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}")
foreach(f bin/sparseflow bin/sparseflow-convert bin/sparseflow-benchmark bin/sparseflow-audit
          ${LIBDIR}/libsparseflow.so include/sparseflow/sparseflow.h
          ${LIBDIR}/cmake/SparseFlow/SparseFlowConfig.cmake
          ${LIBDIR}/cmake/SparseFlow/SparseFlowConfigVersion.cmake
          ${LIBDIR}/cmake/SparseFlow/SparseFlowTargets.cmake
          ${LIBDIR}/pkgconfig/sparseflow.pc share/sparseflow/measured/measured.json)
  if(NOT EXISTS "${prefix}/${f}")
    message(FATAL_ERROR "cmake --install did not install ${f} under ${prefix}")
  endif()
endforeach()
if(NOT IS_SYMLINK "${prefix}/bin/sparseflow-audit")
  message(FATAL_ERROR "bin/sparseflow-audit should be a symlink to sparseflow")
endif()

# 2. The installed commands: the seed's names dispatch to subcommands; the installed binary
#    finds the shipped table under share/ (the seed's example fails listing what it needs).
run("sparseflow --version" "${prefix}/bin/sparseflow" --version)
run("sparseflow-audit --help" "${prefix}/bin/sparseflow-audit" --help)
if(NOT out MATCHES "--from-benchmark")
  message(FATAL_ERROR "sparseflow-audit --help did not show the audit's options:\n${out}")
endif()
run("sparseflow-benchmark --help" "${prefix}/bin/sparseflow-benchmark" --help)
execute_process(COMMAND "${prefix}/bin/sparseflow-audit" --model llama-7b --qps 1000
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "no measured throughput for llama-7b")
  message(FATAL_ERROR "installed sparseflow-audit: expected the missing-measurements message, got ${rc}:\n${out}\n${err}")
endif()

# 3. find_package(SparseFlow) + SparseFlow::sparseflow.
run("configure the consumer" "${CMAKE_COMMAND}" -S "${CONSUMER_DIR}" -B "${WORK}/cmake-build" -G "${GENERATOR}"
    "-DCMAKE_PREFIX_PATH=${prefix}" "-DCMAKE_C_COMPILER=${C_COMPILER}")
run("build the consumer" "${CMAKE_COMMAND}" --build "${WORK}/cmake-build")
run("run the consumer (CMake)" "${WORK}/cmake-build/consumer")
if(NOT out MATCHES "consumer ok")
  message(FATAL_ERROR "consumer (CMake) output:\n${out}")
endif()

# 4. pkg-config: the same program with `pkg-config --cflags --libs sparseflow`, through the
#    example's Makefile.
find_program(PKG_CONFIG pkg-config)
find_program(MAKE_PROGRAM NAMES make gmake)
if(NOT PKG_CONFIG OR NOT MAKE_PROGRAM)
  message(FATAL_ERROR "pkg-config and make are needed for the pkg-config half of this test (apt-get install pkgconf make)")
endif()
set(ENV{PKG_CONFIG_PATH} "${prefix}/${LIBDIR}/pkgconfig")
run("pkg-config" "${PKG_CONFIG}" --cflags --libs sparseflow)
if(NOT out MATCHES "-lsparseflow" OR NOT out MATCHES "-I[^ ]*include")
  message(FATAL_ERROR "pkg-config --cflags --libs sparseflow gave: ${out}")
endif()
file(MAKE_DIRECTORY "${WORK}/make-build")
run("make the consumer" "${MAKE_PROGRAM}" -C "${WORK}/make-build" -f "${CONSUMER_DIR}/Makefile" "CC=${C_COMPILER}")
run("run the consumer (pkg-config)" "${WORK}/make-build/consumer")
if(NOT out MATCHES "consumer ok")
  message(FATAL_ERROR "consumer (pkg-config) output:\n${out}")
endif()
message(STATUS "installed to ${prefix}; consumer built with find_package and with pkg-config")
