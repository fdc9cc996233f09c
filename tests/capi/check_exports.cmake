# Fails unless every dynamic symbol that LIBRARY defines starts with sf_, and the C ABI is there.
# Run as: cmake -DLIBRARY=path/to/libsparseflow.so -DNM=nm -P check_exports.cmake
if(NOT LIBRARY OR NOT EXISTS "${LIBRARY}")
  message(FATAL_ERROR "LIBRARY='${LIBRARY}' does not exist; build sparseflow_shared first")
endif()
execute_process(COMMAND ${NM} -D --defined-only "${LIBRARY}"
  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${NM} -D --defined-only ${LIBRARY} failed (${rc}): ${err}")
endif()
string(REPLACE "\n" ";" lines "${out}")
set(count 0)
set(leaked "")
foreach(line IN LISTS lines)
  # "<address> <type> <name>[@@version]"
  if(line MATCHES "^[0-9a-fA-F]* *[A-Za-z] +([^ @]+)")
    set(name "${CMAKE_MATCH_1}")
    if(name MATCHES "^sf_")
      math(EXPR count "${count} + 1")
    else()
      list(APPEND leaked "${name}")
    endif()
  endif()
endforeach()
if(leaked)
  list(LENGTH leaked n)
  list(SUBLIST leaked 0 20 first)
  string(REPLACE ";" "\n  " first "${first}")
  message(FATAL_ERROR "${LIBRARY} exports ${n} symbols that are not sf_*, e.g.:\n  ${first}\n"
    "Everything but the C ABI must stay hidden: check src/capi/exports.map and the visibility "
    "settings in src/capi/CMakeLists.txt.")
endif()
# The C ABI is the same in every build: the GPU functions exist (as stubs that report why) even
# without the CUDA backend.
foreach(required sf_last_error sf_version sf_prune_24 sf_sparse24_compress sf_sparse24_gemm_cpu
                 sf_cuda_check sf_cuda_linear_create sf_cuda_linear_create_dense sf_cuda_linear_free
                 sf_cuda_linear_info sf_cuda_linear_forward sf_cuda_linear_decompress
                 sf_cuda_release_workspaces)
  if(NOT out MATCHES " ${required}\n")
    message(FATAL_ERROR "${LIBRARY} does not export ${required}")
  endif()
endforeach()
message(STATUS "${LIBRARY}: ${count} symbols exported, all sf_*")
