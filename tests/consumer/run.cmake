# ctest driver: install plora from the current build into a scratch prefix,
# then configure, build and run the consumer both ways.
foreach(var PLORA_BINARY_DIR PLORA_SOURCE_DIR WORK_DIR GENERATOR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake needs -D${var}=...")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK_DIR})
function(run_step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "step failed: ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()
run_step(${CMAKE_COMMAND} --install ${PLORA_BINARY_DIR} --prefix ${WORK_DIR}/prefix)
run_step(${CMAKE_COMMAND} -S ${PLORA_SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/installed -G ${GENERATOR}
         -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
run_step(${CMAKE_COMMAND} --build ${WORK_DIR}/installed)
run_step(${WORK_DIR}/installed/consumer)
run_step(${CMAKE_COMMAND} -S ${PLORA_SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/subdirectory -G ${GENERATOR}
         -DPLORA_SOURCE_DIR=${PLORA_SOURCE_DIR} -DPLORA_BUILD_TESTS=OFF -DPLORA_BUILD_EXAMPLES=OFF
         -DPLORA_ENABLE_CUDA=OFF)
run_step(${CMAKE_COMMAND} --build ${WORK_DIR}/subdirectory)
run_step(${WORK_DIR}/subdirectory/consumer)
