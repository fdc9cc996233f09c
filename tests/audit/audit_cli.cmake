# cmake -DSPARSEFLOW=<binary> -DDATA=<tests/audit/data> -DWORK=<scratch dir> -P audit_cli.cmake
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

function(expect_match text regex what)
  if(NOT text MATCHES "${regex}")
    message(FATAL_ERROR "${what}: expected to match \"${regex}\", got:\n${text}")
  endif()
endfunction()

# 1. The seed's example with only the shipped table: no invented answer, the needed measurements.
execute_process(COMMAND "${SPARSEFLOW}" audit --model llama-7b --qps 1000
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "the seed's example succeeded without measurements:\n${out}")
endif()
expect_match("${err}" "no measured throughput for llama-7b" "seed example")
expect_match("${err}" "sparseflow benchmark --device cuda --size 11008x4096" "seed example")

# 1b. OPT-6.7B from the shipped table alone (H100, dense and 2:4, measured): an answer that names its source.
execute_process(COMMAND "${SPARSEFLOW}" audit --model opt-6.7b --qps 100
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "audit of opt-6.7b from the shipped table failed (${rc}):\n${out}\n${err}")
endif()
expect_match("${out}" "on NVIDIA H100 80GB HBM3" "shipped table")
expect_match("${out}" "GPUs needed +[0-9]+ +[0-9]+" "shipped table")
expect_match("${out}" "measured: [^\n]*measured.json: `sparseflow synth --arch opt-6.7b" "shipped table")

# 1c. A load too large to count is an error naming the limit, not a wrapped "GPUs needed 1 1".
execute_process(COMMAND "${SPARSEFLOW}" audit --model opt-6.7b --qps 1e21
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "audit --qps 1e21 succeeded:\n${out}")
endif()
expect_match("${err}" "more than the 9007199254740992 \\(2\\^53\\)" "--qps 1e21")

# 2. From (synthetic) model benchmark files: 5 dense GPUs vs 3 (hand-computed in test_audit.cpp).
set(args audit --model opt-6.7b --qps 10
    --from-benchmark "${DATA}/opt-6.7b-dense.synthetic.json" --from-benchmark "${DATA}/opt-6.7b-24.synthetic.json"
    --price-per-gpu-hour 2 --grid-gco2-per-kwh 400)
execute_process(COMMAND "${SPARSEFLOW}" ${args} --plot "${WORK}/gpus.svg"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "audit with benchmark files failed (${rc}):\n${out}\n${err}")
endif()
expect_match("${out}" "GPUs needed +5 +3" "text report")
expect_match("${out}" "cost per year +87600 +52560" "text report")
expect_match("${out}" "source: user flag --price-per-gpu-hour" "text report")
expect_match("${out}" "NVIDIA H100 Tensor Core GPU datasheet" "text report")
file(READ "${WORK}/gpus.svg" svg)
expect_match("${svg}" "<svg .*</svg>" "--plot")

# 3. --json carries the same numbers.
execute_process(COMMAND "${SPARSEFLOW}" ${args} --json RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "audit --json failed (${rc}):\n${err}")
endif()
string(JSON dense_gpus GET "${out}" dense gpus)
string(JSON sparse_gpus GET "${out}" sparse gpus)
if(NOT dense_gpus EQUAL 5 OR NOT sparse_gpus EQUAL 3)
  message(FATAL_ERROR "--json: expected 5 and 3 GPUs, got ${dense_gpus} and ${sparse_gpus}:\n${out}")
endif()

# 4. The seed's command name: a symlink called sparseflow-audit runs `sparseflow audit`.
file(CREATE_LINK "${SPARSEFLOW}" "${WORK}/sparseflow-audit" SYMBOLIC)
list(REMOVE_AT args 0)
execute_process(COMMAND "${WORK}/sparseflow-audit" ${args} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "sparseflow-audit failed (${rc}):\n${out}\n${err}")
endif()
expect_match("${out}" "GPUs needed +5 +3" "sparseflow-audit")
