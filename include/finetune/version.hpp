// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
#pragma once

// The one source of truth for the version; CMake parses these three lines.
#define FINETUNE_VERSION_MAJOR 0
#define FINETUNE_VERSION_MINOR 1
#define FINETUNE_VERSION_PATCH 0

#define FINETUNE_VERSION \
  (FINETUNE_VERSION_MAJOR * 10000 + FINETUNE_VERSION_MINOR * 100 + FINETUNE_VERSION_PATCH)
