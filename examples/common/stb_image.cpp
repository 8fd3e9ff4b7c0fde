// The one translation unit of each runner that compiles stb_image's
// implementation (see plora/io/image.hpp); kept apart so that nvcc never sees it.
#define PLORA_STB_IMPLEMENTATION
#include "plora/io/image.hpp"
