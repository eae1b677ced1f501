// PAMR on CUDA: one affinity launch, then one propagation launch per iteration (driven from pamr.cpp).
//
// Only c10 CUDA headers are included (no torch/extension.h, no ATen/cuda/CUDAContext.h): nvcc parse
// time dominates the build, and CUDAContext.h needs cuSPARSE/cuBLAS headers that a bare toolkit may
// lack. Every output element is written by exactly one thread from a fixed-order
// gather: no atomics, so results are bitwise reproducible run to run.
#include "pamr_common.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

namespace aesipe {
namespace cuda {
namespace {

constexpr int kThreads = 256;
// Mask channels per propagation thread: each affinity weight and neighbour index is loaded once and
// reused for this many channels held in registers.
constexpr int kChannelsPerThread = 4;

int blocks_for(int64_t work) {
  // Grid-stride loops below, so the grid can be capped well under the 2^31 - 1 limit.
  return int(std::min<int64_t>((work + kThreads - 1) / kThreads, int64_t(1) << 20));
}

// Flat index (within a plane) of neighbour ring cell r at dilation d of pixel (y, x).
__device__ __forceinline__ int64_t neighbour(const Geometry& g, int r, int d, int64_t y, int64_t x) {
  const int64_t ny = clamp_index(y + int64_t(ring_dy(r)) * d, g.height);
  const int64_t nx = clamp_index(x + int64_t(ring_dx(r)) * d, g.width);
  return ny * g.width + nx;
}

// One thread per pixel. Logits are accumulated channel by channel straight into the thread's own
// column of `aff` (P is a run-time value, too large for registers), then softmax-normalised in place.
template <typename T>
__global__ void affinity_kernel(const Geometry g, const T* __restrict__ image, T* __restrict__ aff) {
  const int64_t hw = g.plane();
  const int64_t P = g.num_neighbours();
  const int64_t total = g.batch * hw;
  const T taps = T(9 * g.num_dilations);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / hw, pix = i % hw;
    const int64_t y = pix / g.width, x = pix % g.width;
    T* out = aff + b * P * hw + pix;  // neighbour j lives at out[j * hw]

    for (int64_t c = 0; c < g.channels; ++c) {
      const T* plane = image + (b * g.channels + c) * hw;
      const T centre = plane[pix];
      // Two-pass unbiased std over the 9 * D taps (centre counted once per dilation).
      T sum = T(g.num_dilations) * centre;
      for (int i_d = 0; i_d < g.num_dilations; ++i_d) {
#pragma unroll
        for (int r = 0; r < kRingSize; ++r) sum += plane[neighbour(g, r, g.dilations[i_d], y, x)];
      }
      const T mean = sum / taps;
      T sq = T(g.num_dilations) * (centre - mean) * (centre - mean);
      for (int i_d = 0; i_d < g.num_dilations; ++i_d) {
#pragma unroll
        for (int r = 0; r < kRingSize; ++r) {
          const T dv = plane[neighbour(g, r, g.dilations[i_d], y, x)] - mean;
          sq += dv * dv;
        }
      }
      const T denom = T(kEps) + T(kStdScale) * sqrt(sq / (taps - T(1)));
      for (int i_d = 0; i_d < g.num_dilations; ++i_d) {
#pragma unroll
        for (int r = 0; r < kRingSize; ++r) {
          const int64_t j = int64_t(i_d) * kRingSize + r;
          const T logit = -fabs(centre - plane[neighbour(g, r, g.dilations[i_d], y, x)]) / denom;
          out[j * hw] = c == 0 ? logit : out[j * hw] + logit;
        }
      }
    }

    // Mean over channels, then a max-shifted softmax over the P neighbours.
    T top = out[0] / T(g.channels);
    for (int64_t j = 0; j < P; ++j) {
      const T logit = out[j * hw] / T(g.channels);
      out[j * hw] = logit;
      top = logit > top ? logit : top;
    }
    T norm = T(0);
    for (int64_t j = 0; j < P; ++j) {
      const T e = exp(out[j * hw] - top);
      out[j * hw] = e;
      norm += e;
    }
    for (int64_t j = 0; j < P; ++j) out[j * hw] /= norm;
  }
}

// One thread per (batch, group of kChannelsPerThread mask channels, pixel); consecutive threads take
// consecutive pixels, so affinity loads are coalesced and neighbour loads nearly so.
template <typename T>
__global__ void propagate_kernel(const Geometry g, const T* __restrict__ aff, const T* __restrict__ src,
                                 T* __restrict__ dst) {
  const int64_t hw = g.plane();
  const int64_t P = g.num_neighbours();
  const int64_t K = g.channels;
  const int64_t groups = (K + kChannelsPerThread - 1) / kChannelsPerThread;
  const int64_t total = g.batch * groups * hw;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pix = i % hw, rest = i / hw;
    const int64_t group = rest % groups, b = rest / groups;
    const int64_t y = pix / g.width, x = pix % g.width;
    const int64_t k0 = group * kChannelsPerThread;
    const int64_t count = K - k0 < kChannelsPerThread ? K - k0 : kChannelsPerThread;
    const T* weights = aff + b * P * hw + pix;
    const T* planes = src + (b * K + k0) * hw;

    T acc[kChannelsPerThread];
#pragma unroll
    for (int kk = 0; kk < kChannelsPerThread; ++kk) acc[kk] = T(0);
    for (int i_d = 0; i_d < g.num_dilations; ++i_d) {
#pragma unroll
      for (int r = 0; r < kRingSize; ++r) {
        const T w = weights[(int64_t(i_d) * kRingSize + r) * hw];
        const int64_t nb = neighbour(g, r, g.dilations[i_d], y, x);
#pragma unroll
        for (int kk = 0; kk < kChannelsPerThread; ++kk) {
          if (kk < count) acc[kk] += w * planes[kk * hw + nb];
        }
      }
    }
#pragma unroll
    for (int kk = 0; kk < kChannelsPerThread; ++kk) {
      if (kk < count) dst[(b * K + k0 + kk) * hw + pix] = acc[kk];
    }
  }
}

}  // namespace

template <typename T>
void affinity(const Geometry& g, const T* image, T* aff) {
  const int64_t work = g.batch * g.plane();
  if (work == 0) return;
  affinity_kernel<T><<<blocks_for(work), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(g, image, aff);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void propagate(const Geometry& g, const T* aff, const T* src, T* dst) {
  const int64_t groups = (g.channels + kChannelsPerThread - 1) / kChannelsPerThread;
  const int64_t work = g.batch * groups * g.plane();
  if (work == 0) return;
  propagate_kernel<T><<<blocks_for(work), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(g, aff, src, dst);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void affinity<float>(const Geometry&, const float*, float*);
template void affinity<double>(const Geometry&, const double*, double*);
template void propagate<float>(const Geometry&, const float*, const float*, float*);
template void propagate<double>(const Geometry&, const double*, const double*, double*);

}  // namespace cuda
}  // namespace aesipe
