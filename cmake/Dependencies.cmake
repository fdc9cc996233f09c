# Third-party libraries: all from Debian packages (scripts/install-deps installs them).
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED)
find_package(fmt REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(CLI11 QUIET CONFIG)
if(NOT CLI11_FOUND)
  find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  target_include_directories(CLI11::CLI11 INTERFACE ${CLI11_INCLUDE_DIR})
endif()
# Dense CPU baseline for benchmarks.
set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)
find_path(CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas x86_64-linux-gnu/openblas-pthread REQUIRED)
# The HTTP server of `sparseflow serve`: Debian's libcpp-httplib-dev. Debian builds cpp-httplib as a
# compiled library with OpenSSL, zlib and Brotli support, and the header declares different classes
# under those macros, so the flags must be the library's own: they come from its pkg-config file.
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(HTTPLIB QUIET IMPORTED_TARGET cpp-httplib>=0.11)
endif()
if(NOT HTTPLIB_FOUND)
  message(FATAL_ERROR
    "cpp-httplib (0.11 or later) was not found through pkg-config: `sparseflow serve` is built on "
    "it. Install it with scripts/install-deps, or: apt-get install libcpp-httplib-dev pkg-config")
endif()
# SparseGPT's Cholesky factorisations (dpotrf, dpotri): OpenBLAS carries LAPACK, so with the vendor
# above this finds the same library.
find_package(LAPACK REQUIRED)
