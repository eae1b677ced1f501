// PAMR on CUDA: one affinity launch, then one propagation launch per iteration (driven by the shared driver,
// pamr_driver.h, from cuda/pamr_cuda.cpp).
//
// The per-thread code lives in cuda/pamr_thread.cuh, which a host compiler also builds (the grid emulator of
// the tests, cuda/pamr_emulator.cpp). This file only turns it into kernels and launches them.
//
// Only c10 CUDA headers are included (no torch/extension.h, no ATen/cuda/CUDAContext.h, no torch/library.h):
// nvcc parse time dominates the build, and CUDAContext.h needs cuSPARSE/cuBLAS headers that a bare toolkit
// may lack. The operator registration is host code in cuda/pamr_cuda.cpp.
#include "cuda/pamr_thread.cuh"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

namespace aesipe {
namespace cuda {
namespace {

__device__ __forceinline__ GridPos grid_pos() {
  return {int64_t(blockIdx.x), int64_t(blockDim.x), int64_t(threadIdx.x), int64_t(gridDim.x)};
}

template <typename T>
__global__ void affinity_kernel(const Geometry g, const T* __restrict__ image, T* __restrict__ aff) {
  affinity_thread(g, image, aff, grid_pos());
}

template <typename T>
__global__ void propagate_kernel(const Geometry g, const T* __restrict__ aff, const T* __restrict__ src,
                                 T* __restrict__ dst) {
  propagate_thread(g, aff, src, dst, grid_pos());
}

}  // namespace

template <typename T>
void affinity(const Geometry& g, const T* image, T* aff) {
  const int64_t work = affinity_work(g);
  if (work == 0) return;
  const auto blocks = unsigned(grid_blocks(work, kThreadsPerBlock, kMaxBlocks));
  affinity_kernel<T><<<blocks, unsigned(kThreadsPerBlock), 0, c10::cuda::getCurrentCUDAStream()>>>(g, image, aff);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void propagate(const Geometry& g, const T* aff, const T* src, T* dst) {
  const int64_t work = propagate_work(g);
  if (work == 0) return;
  const auto blocks = unsigned(grid_blocks(work, kThreadsPerBlock, kMaxBlocks));
  propagate_kernel<T><<<blocks, unsigned(kThreadsPerBlock), 0, c10::cuda::getCurrentCUDAStream()>>>(g, aff, src, dst);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void affinity<float>(const Geometry&, const float*, float*);
template void affinity<double>(const Geometry&, const double*, double*);
template void propagate<float>(const Geometry&, const float*, const float*, float*);
template void propagate<double>(const Geometry&, const double*, const double*, double*);

}  // namespace cuda
}  // namespace aesipe
