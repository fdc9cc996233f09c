# CUDA is optional: AUTO builds it when nvcc is found, so a machine without nvcc builds the CPU side.
set(SF_WITH_CUDA OFF)
if(SPARSEFLOW_CUDA STREQUAL "ON" OR SPARSEFLOW_CUDA STREQUAL "AUTO")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(SF_WITH_CUDA ON)
  elseif(SPARSEFLOW_CUDA STREQUAL "ON")
    message(FATAL_ERROR "SPARSEFLOW_CUDA=ON but no CUDA compiler was found. Install the CUDA toolkit or configure with -DSPARSEFLOW_CUDA=OFF.")
  endif()
endif()

if(SF_WITH_CUDA)
  # Explicit -gencode flags: "90a" must be compute_90a/sm_90a for wgmma.sp.
  set(CMAKE_CUDA_ARCHITECTURES OFF)
  enable_language(CUDA)
  # CMake 3.25 does not know nvcc 13's C++20 flag; tell it.
  if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  foreach(arch IN LISTS SPARSEFLOW_CUDA_ARCHS)
    string(APPEND CMAKE_CUDA_FLAGS " -gencode=arch=compute_${arch},code=sm_${arch}")
  endforeach()
  # --threads 0: compile the four architectures of one file in parallel; decode.cu alone runs ptxas for
  # several minutes per architecture, and on a 2-core CI machine it would otherwise be the long pole.
  string(APPEND CMAKE_CUDA_FLAGS " --expt-relaxed-constexpr -lineinfo --threads 0")
  find_package(CUDAToolkit REQUIRED)
  # cuSPARSELt: optional baseline (PyPI nvidia-cusparselt-cu13, or the GPU image's torch venv).
  # The wheel's include folder (nvidia/cu13/include) also holds pip copies of the CUDA headers, so
  # it is never put on the include path: only cusparseLt.h (+ its stub) is copied into the build
  # tree, and the toolkit's own cuda_runtime.h etc. stay the ones nvcc sees.
  set(sf_cslt_roots $ENV{CUSPARSELT_DIR}
      /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cusparselt
      /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13)
  find_path(CUSPARSELT_INCLUDE_DIR cusparseLt.h PATHS ${sf_cslt_roots} PATH_SUFFIXES include NO_DEFAULT_PATH)
  find_path(CUSPARSELT_INCLUDE_DIR cusparseLt.h)
  find_library(CUSPARSELT_LIBRARY NAMES cusparseLt libcusparseLt.so.0
    PATHS ${sf_cslt_roots} PATH_SUFFIXES lib lib64 NO_DEFAULT_PATH)
  find_library(CUSPARSELT_LIBRARY NAMES cusparseLt libcusparseLt.so.0)
  option(SPARSEFLOW_CUSPARSELT "Use cuSPARSELt as a benchmark baseline when it is found" ON)
  if(SPARSEFLOW_CUSPARSELT AND CUSPARSELT_INCLUDE_DIR AND CUSPARSELT_LIBRARY)
    set(SF_WITH_CUSPARSELT ON)
    set(SF_CUSPARSELT_SHIM ${CMAKE_BINARY_DIR}/cusparselt-include)
    file(MAKE_DIRECTORY ${SF_CUSPARSELT_SHIM})
    file(GLOB sf_cslt_headers ${CUSPARSELT_INCLUDE_DIR}/cusparseLt*.h)
    file(COPY ${sf_cslt_headers} DESTINATION ${SF_CUSPARSELT_SHIM})
    message(STATUS "cuSPARSELt baseline: ${CUSPARSELT_LIBRARY} (header from ${CUSPARSELT_INCLUDE_DIR})")
  else()
    set(SF_WITH_CUSPARSELT OFF)
    message(STATUS "cuSPARSELt not found: the cuSPARSELt baseline is left out "
                   "(set CUSPARSELT_DIR to the folder holding include/cusparseLt.h and lib/)")
  endif()
endif()
message(STATUS "SparseFlow CUDA backend: ${SF_WITH_CUDA} (archs: ${SPARSEFLOW_CUDA_ARCHS})")
