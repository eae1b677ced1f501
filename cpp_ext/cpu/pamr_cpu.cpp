// The CPU kernel of aesipe::pamr: the shared driver (pamr_driver.h) on the kernels of cpu/pamr_kernel.cpp.
#include "pamr_driver.h"

#include <torch/library.h>

namespace aesipe {
namespace cpu {
namespace {

struct Kernels {
  template <typename T>
  void affinity(const Geometry& g, const T* image, T* aff) const { cpu::affinity<T>(g, image, aff); }
  template <typename T>
  void propagate(const Geometry& g, const T* aff, const T* src, T* dst) const { cpu::propagate<T>(g, aff, src, dst); }
};

at::Tensor pamr_cpu(const at::Tensor& image, const at::Tensor& mask, at::IntArrayRef dilations, int64_t num_iter) {
  return pamr_forward(image, mask, dilations, num_iter, Kernels{});
}

}  // namespace
}  // namespace cpu
}  // namespace aesipe

TORCH_LIBRARY_IMPL(aesipe, CPU, m) { m.impl("pamr", &aesipe::cpu::pamr_cpu); }
