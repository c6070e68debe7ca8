// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// Umbrella header: everything finetune offers. Each technique also lives in
// its own self-contained header (plus compat.hpp) for those who copy one.
#pragma once

#include "finetune/compat.hpp"
#include "finetune/version.hpp"
