// A user's program: it includes finetune through the package and uses it.
#include <finetune/finetune.hpp>

#include <iostream>

int main() {
  std::cout << "finetune " << FINETUNE_VERSION_MAJOR << '.' << FINETUNE_VERSION_MINOR << '.'
            << FINETUNE_VERSION_PATCH << " on LibTorch " << finetune::compat::torch_version()
            << '\n';
  return 0;
}
