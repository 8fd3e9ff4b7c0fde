# The CUDA backend as a link target for plora's own CUDA executables (tests and
# benchmarks). The top level does not export one yet; a consumer needs the same
# three libraries and nvcc's --extended-lambda.
if(NOT TARGET plora_cuda_local)
  add_library(plora_cuda_local INTERFACE)
  target_link_libraries(plora_cuda_local INTERFACE plora::plora CUDA::cudart CUDA::cublas CUDA::cusolver)
  target_compile_options(plora_cuda_local INTERFACE $<$<COMPILE_LANGUAGE:CUDA>:--extended-lambda>)
endif()

# "90" is sm_90 machine code (H100 / H200) plus compute_90 PTX that newer GPUs JIT-compile.
set(PLORA_CUDA_ARCHITECTURES "90" CACHE STRING "CUDA architectures of plora's CUDA tests and benchmarks")

# nvcc-side counterpart of plora_target_defaults(): C++20, the architectures,
# warnings (host compiler warnings through -Xcompiler) and -Werror.
function(plora_cuda_target_defaults target)
  set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES "${PLORA_CUDA_ARCHITECTURES}")
  # CMake 3.25 knows no CUDA_STANDARD 20 for nvcc, so the flag is given directly.
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20 -Xcompiler=-Wall,-Wextra>)
  if(PLORA_WARNINGS_AS_ERRORS)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings -Xcompiler=-Werror>)
  endif()
endfunction()
