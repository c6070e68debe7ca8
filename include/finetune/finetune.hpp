// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// Umbrella header: everything finetune offers. Each technique also lives in
// its own self-contained header (plus compat.hpp) for those who copy one.
#pragma once

#include "finetune/compat.hpp"
#include "finetune/fused_adamw.hpp"
#include "finetune/grad_scaler.hpp"
#include "finetune/layerwise_lr.hpp"
#include "finetune/lr_schedule.hpp"
#include "finetune/periodic_evaluator.hpp"
#include "finetune/reinit.hpp"
#include "finetune/scheduler.hpp"
#include "finetune/swa.hpp"
#include "finetune/training_state.hpp"
#include "finetune/unfreezing.hpp"
#include "finetune/version.hpp"

// Data parallelism needs gloo's headers for c10d's ProcessGroupGloo, which no
// LibTorch ships (Debian: libgloo-dev): included when they are there.
#if defined(__has_include)
#if __has_include(<gloo/algorithm.h>)
#include "finetune/distributed.hpp"
#endif
#endif
