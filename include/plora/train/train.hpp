#pragma once
// The training family: optimizers, schedules, clipping, the finite guard, the
// trainer and its callbacks. Checkpoints (train/checkpoint.hpp) need plora::io
// and are included separately.
#include "plora/train/adamw.hpp"
#include "plora/train/callbacks.hpp"
#include "plora/train/clip.hpp"
#include "plora/train/concepts.hpp"
#include "plora/train/guard.hpp"
#include "plora/train/optimizer_concepts.hpp"
#include "plora/train/schedule.hpp"
#include "plora/train/sgd.hpp"
#include "plora/train/trainer.hpp"
