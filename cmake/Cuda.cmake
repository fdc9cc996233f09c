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
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  foreach(arch IN LISTS SPARSEFLOW_CUDA_ARCHS)
    string(APPEND CMAKE_CUDA_FLAGS " -gencode=arch=compute_${arch},code=sm_${arch}")
  endforeach()
  string(APPEND CMAKE_CUDA_FLAGS " --expt-relaxed-constexpr -lineinfo")
  find_package(CUDAToolkit REQUIRED)
  # cuSPARSELt: optional baseline (PyPI nvidia-cusparselt-cu13, or the GPU image's torch venv).
  find_path(CUSPARSELT_INCLUDE_DIR cusparseLt.h
    HINTS ENV CUSPARSELT_DIR
    PATHS /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cusparselt
          /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13
    PATH_SUFFIXES include)
  find_library(CUSPARSELT_LIBRARY NAMES cusparseLt libcusparseLt.so.0
    HINTS ENV CUSPARSELT_DIR
    PATHS /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cusparselt
          /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13
    PATH_SUFFIXES lib)
  if(CUSPARSELT_INCLUDE_DIR AND CUSPARSELT_LIBRARY)
    set(SF_WITH_CUSPARSELT ON)
    message(STATUS "cuSPARSELt baseline: ${CUSPARSELT_LIBRARY}")
  else()
    set(SF_WITH_CUSPARSELT OFF)
    message(STATUS "cuSPARSELt not found: the cuSPARSELt baseline is left out")
  endif()
endif()
message(STATUS "SparseFlow CUDA backend: ${SF_WITH_CUDA} (archs: ${SPARSEFLOW_CUDA_ARCHS})")
