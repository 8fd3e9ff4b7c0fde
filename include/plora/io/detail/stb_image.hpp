#pragma once
// stb_image (Debian libstb-dev). Its implementation is compiled in the one
// translation unit that defines PLORA_STB_IMPLEMENTATION before including any
// plora io header, in the usual single-header-library way; every other unit
// sees declarations only. A program that already compiles stb_image itself
// simply does not define it.
#if defined(PLORA_STB_IMPLEMENTATION)
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STB_IMAGE_IMPLEMENTATION
#endif
#include <stb/stb_image.h>
