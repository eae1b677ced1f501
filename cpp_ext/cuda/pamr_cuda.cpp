// The CUDA kernel of aesipe::pamr: the shared driver (pamr_driver.h) on the launchers of cuda/pamr_kernel.cu.
//
// Host code, compiled by the C++ compiler, not nvcc: the registration needs torch/library.h and ATen, whose
// parse would dominate an nvcc compile (see cpp_ext/README.md). Compiled only into CUDA builds.
#include "pamr_driver.h"

#include <torch/library.h>

namespace aesipe {
namespace cuda {
namespace {

struct Kernels {
  template <typename T>
  void affinity(const Geometry& g, const T* image, T* aff) const { cuda::affinity<T>(g, image, aff); }
  template <typename T>
  void propagate(const Geometry& g, const T* aff, const T* src, T* dst) const { cuda::propagate<T>(g, aff, src, dst); }
};

at::Tensor pamr_cuda(const at::Tensor& image, const at::Tensor& mask, at::IntArrayRef dilations, int64_t num_iter) {
  return pamr_forward(image, mask, dilations, num_iter, Kernels{});
}

}  // namespace
}  // namespace cuda
}  // namespace aesipe

TORCH_LIBRARY_IMPL(aesipe, CUDA, m) { m.impl("pamr", &aesipe::cuda::pamr_cuda); }
