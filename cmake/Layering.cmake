# One target per part of src/, each compiled against only the parts it may depend on, so that an
# include across the layering fails to compile instead of growing a cycle.
#
# A part P gets an include tree of its own in the build directory, holding symbolic links to the
# source folders of P and of every part below it (the transitive closure of SF_LAYER_<P>); its
# sources see that tree instead of src/. `#include "offload/..."` from model/ then finds no file.
# The parts' objects make up sf_internal, which the CLI, the tests and libsparseflow.so link as
# before; consumers above the layering (cli, capi, tests, tools) see all of src/.

# Direct dependencies of each part (DESIGN.md, "Layers"). The order of this list is the layering.
set(SF_PARTS core arch sparse24 tokenizer audit report format kernels chat model offload backend
             session serve)
set(SF_LAYER_core "")
set(SF_LAYER_arch core)
set(SF_LAYER_sparse24 core)
set(SF_LAYER_tokenizer core)
set(SF_LAYER_audit core)
set(SF_LAYER_report core)
set(SF_LAYER_format arch)
set(SF_LAYER_kernels sparse24)
set(SF_LAYER_chat tokenizer)
set(SF_LAYER_model arch format kernels sparse24 tokenizer)
set(SF_LAYER_offload model)
set(SF_LAYER_backend offload)
set(SF_LAYER_session backend chat)
set(SF_LAYER_serve session)

# sf_common: what every part compiles and links with (third-party headers, definitions).
add_library(sf_common INTERFACE)
target_include_directories(sf_common INTERFACE ${PROJECT_SOURCE_DIR}/include)
target_link_libraries(sf_common INTERFACE fmt::fmt nlohmann_json::nlohmann_json OpenMP::OpenMP_CXX
                                          Threads::Threads)
target_compile_definitions(sf_common INTERFACE SPARSEFLOW_VERSION_STRING="${PROJECT_VERSION}"
  $<$<BOOL:${SF_WITH_CUDA}>:SPARSEFLOW_WITH_CUDA=1>)

# The parts below `part`, itself included, into the variable `out`.
function(sf_layer_closure part out)
  set(seen ${part})
  set(todo ${SF_LAYER_${part}})
  while(todo)
    list(POP_FRONT todo p)
    if(NOT p IN_LIST seen)
      list(APPEND seen ${p})
      list(APPEND todo ${SF_LAYER_${p}})
    endif()
  endwhile()
  set(${out} ${seen} PARENT_SCOPE)
endfunction()

# sf_part(<part>): the OBJECT library sf_part_<part> with the part's include tree; its objects go
# into sf_internal. The part's CMakeLists adds its sources to it.
function(sf_part part)
  if(NOT part IN_LIST SF_PARTS)
    message(FATAL_ERROR "sf_part(${part}): not a part of the layering in cmake/Layering.cmake")
  endif()
  set(tree ${CMAKE_BINARY_DIR}/layering/${part})
  file(REMOVE_RECURSE ${tree})
  file(MAKE_DIRECTORY ${tree})
  sf_layer_closure(${part} allowed)
  foreach(p IN LISTS allowed)
    file(CREATE_LINK ${PROJECT_SOURCE_DIR}/src/${p} ${tree}/${p} SYMBOLIC)
  endforeach()
  add_library(sf_part_${part} OBJECT)
  target_include_directories(sf_part_${part} PRIVATE ${tree})
  target_link_libraries(sf_part_${part} PUBLIC sf_common)
  # libsparseflow.so exports only sf_*: the engine is compiled with hidden visibility.
  set_target_properties(sf_part_${part} PROPERTIES
    CXX_VISIBILITY_PRESET hidden CUDA_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  target_sources(sf_internal PRIVATE $<TARGET_OBJECTS:sf_part_${part}>)
endfunction()
