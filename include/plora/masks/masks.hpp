#pragma once
// The mask family: row/column masks (random, targeted, stochastic), element
// masks and the uniform-ratio helper.
#include "plora/masks/bernoulli.hpp"
#include "plora/masks/concepts.hpp"
#include "plora/masks/element.hpp"
#include "plora/masks/split.hpp"
#include "plora/masks/targeted.hpp"
#include "plora/masks/uniform.hpp"
