// finetune: fine-tuning techniques for LibTorch, header-only.
// SPDX-License-Identifier: MIT
//
// The one place where LibTorch versions differ for us (1.13 from Debian, 2.x
// from the PyPI wheel). Every technique header may include this file and
// nothing else from finetune; copy it along with any single header you take.
#pragma once

#include <torch/version.h>

/// True when the LibTorch being compiled against is at least major.minor.
#define FINETUNE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||           \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace finetune {
namespace compat {

/// "major.minor.patch" of the LibTorch headers in use.
inline const char* torch_version() { return TORCH_VERSION; }

}  // namespace compat
}  // namespace finetune
