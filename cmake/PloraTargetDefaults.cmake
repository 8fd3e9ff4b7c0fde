# Flags for plora's own executables (tests, examples, benchmarks). The INTERFACE
# library itself imposes none of these on its users.
function(plora_target_defaults target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic>)
  # GCC 12 reports false "may be used uninitialized" inside its own AVX-512
  # intrinsic headers when Eigen's kernels inline (GCC bug 105593).
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wno-maybe-uninitialized>)
  endif()
  if(PLORA_WARNINGS_AS_ERRORS)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
  endif()
  if(PLORA_NATIVE)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-march=native>)
  endif()
  if(PLORA_SANITIZE)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined>)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()

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
