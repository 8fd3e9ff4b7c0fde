# plora_add_doc_snippets(<target> EXTENSION <cpp|cu> DOCS <md>... INCLUDES <header>...
#                        [USING_NAMESPACE <ns>])
# An object library compiling the ```cpp blocks of DOCS (cmake/doc_snippets.cmake),
# regenerated whenever a document changes; the caller adds its target defaults.
set(PLORA_DOC_SNIPPETS_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/doc_snippets.cmake")
function(plora_add_doc_snippets target)
  cmake_parse_arguments(ARG "" "EXTENSION;USING_NAMESPACE" "DOCS;INCLUDES" ${ARGN})
  set(source "${CMAKE_CURRENT_BINARY_DIR}/${target}.${ARG_EXTENSION}")
  list(JOIN ARG_DOCS "|" docs)
  list(JOIN ARG_INCLUDES "|" includes)
  add_custom_command(OUTPUT "${source}"
                     COMMAND ${CMAKE_COMMAND} "-DDOCS=${docs}" "-DOUTPUT=${source}" "-DINCLUDES=${includes}"
                             "-DUSING_NAMESPACE=${ARG_USING_NAMESPACE}" -P "${PLORA_DOC_SNIPPETS_SCRIPT}"
                     DEPENDS ${ARG_DOCS} "${PLORA_DOC_SNIPPETS_SCRIPT}"
                     COMMENT "Extracting the C++ examples of ${docs}" VERBATIM)
  add_library(${target} OBJECT "${source}")
endfunction()
