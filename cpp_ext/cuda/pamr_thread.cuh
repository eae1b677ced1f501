// What one CUDA thread of the PAMR kernels does, written once for two compilers:
//
//   * nvcc: cuda/pamr_kernel.cu wraps each `*_thread` function in a __global__ kernel that passes
//     blockIdx/blockDim/threadIdx/gridDim;
//   * a host C++ compiler: cuda/pamr_emulator.cpp (a test build, never shipped in the op library) calls the
//     same functions for every (block, thread) of the grid the .cu would launch, so the index arithmetic,
//     grid-stride loops and remainder paths run, and are tested, on machines without a GPU.
//
// Hence only c10/macros (C10_HOST_DEVICE: `__host__ __device__` under nvcc, nothing otherwise) and <cmath>:
// std::sqrt/exp/fabs are device functions under nvcc and the usual ones on the host. Every output element
// is written by exactly one work item, from a fixed-order gather: no atomics, no shared memory, no
// synchronisation, so running the threads one after another is a faithful emulation.
#pragma once

#include "pamr_common.h"

#include <cmath>
#include <cstdint>

// nvcc unrolls the fixed-count ring loops; a host compiler would only warn about an unknown pragma.
#ifdef __CUDACC__
#define AESIPE_UNROLL _Pragma("unroll")
#else
#define AESIPE_UNROLL
#endif

namespace aesipe {
namespace cuda {

// Launch shape of both kernels: blocks of kThreadsPerBlock threads, at most kMaxBlocks blocks; work
// beyond blocks * threads is covered by the grid-stride loops (far under the 2^31 - 1 grid limit).
constexpr int64_t kThreadsPerBlock = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;
// Mask channels per propagation work item: each affinity weight and neighbour index is loaded once and
// reused for this many channels held in registers.
constexpr int kChannelsPerThread = 4;

// Where a thread sits in its grid: the four built-in variables of CUDA, as 64-bit values.
struct GridPos {
  int64_t block, threads_per_block, thread, blocks;
  C10_HOST_DEVICE int64_t first() const { return block * threads_per_block + thread; }
  C10_HOST_DEVICE int64_t stride() const { return blocks * threads_per_block; }
};

inline int64_t grid_blocks(int64_t work, int64_t threads_per_block, int64_t max_blocks) {
  const int64_t needed = (work + threads_per_block - 1) / threads_per_block;
  return needed < max_blocks ? needed : max_blocks;
}

C10_HOST_DEVICE inline int64_t channel_groups(int64_t channels) {
  return (channels + kChannelsPerThread - 1) / kChannelsPerThread;
}
// Work items of each kernel: one per pixel (affinity), one per pixel and group of mask channels (propagation).
C10_HOST_DEVICE inline int64_t affinity_work(const Geometry& g) { return g.batch * g.plane(); }
C10_HOST_DEVICE inline int64_t propagate_work(const Geometry& g) {
  return g.batch * channel_groups(g.channels) * g.plane();
}

// Flat index (within a plane) of neighbour ring cell r at dilation d of pixel (y, x).
C10_HOST_DEVICE inline int64_t neighbour(const Geometry& g, int r, int d, int64_t y, int64_t x) {
  const int64_t ny = clamp_index(y + int64_t(ring_dy(r)) * d, g.height);
  const int64_t nx = clamp_index(x + int64_t(ring_dx(r)) * d, g.width);
  return ny * g.width + nx;
}

// The affinity kernel's thread: one work item per pixel, i = b * H * W + y * W + x, grid-stride. Logits are
// accumulated channel by channel straight into the pixel's own column of `aff` [B, P, H, W] (P is a run-time
// value, too large for registers), then softmax-normalised in place.
template <typename T>
C10_HOST_DEVICE inline void affinity_thread(const Geometry& g, const T* __restrict__ image, T* __restrict__ aff,
                                            const GridPos pos) {
  const int64_t hw = g.plane();
  const int64_t P = g.num_neighbours();
  const int64_t total = affinity_work(g);
  const T taps = T(9 * g.num_dilations);
  for (int64_t i = pos.first(); i < total; i += pos.stride()) {
    const int64_t b = i / hw, pix = i % hw;
    const int64_t y = pix / g.width, x = pix % g.width;
    T* out = aff + b * P * hw + pix;  // neighbour j lives at out[j * hw]

    for (int64_t c = 0; c < g.channels; ++c) {
      const T* plane = image + (b * g.channels + c) * hw;
      const T centre = plane[pix];
      // Two-pass unbiased std over the 9 * D taps (centre counted once per dilation).
      T sum = T(g.num_dilations) * centre;
      for (int i_d = 0; i_d < g.num_dilations; ++i_d) {
        AESIPE_UNROLL
        for (int r = 0; r < kRingSize; ++r) sum += plane[neighbour(g, r, g.dilations[i_d], y, x)];
      }
      const T mean = sum / taps;
      T sq = T(g.num_dilations) * (centre - mean) * (centre - mean);
      for (int i_d = 0; i_d < g.num_dilations; ++i_d) {
        AESIPE_UNROLL
        for (int r = 0; r < kRingSize; ++r) {
          const T dv = plane[neighbour(g, r, g.dilations[i_d], y, x)] - mean;
          sq += dv * dv;
        }
      }
      const T denom = T(kEps) + T(kStdScale) * std::sqrt(sq / (taps - T(1)));
      for (int i_d = 0; i_d < g.num_dilations; ++i_d) {
        AESIPE_UNROLL
        for (int r = 0; r < kRingSize; ++r) {
          const int64_t j = int64_t(i_d) * kRingSize + r;
          const T logit = -std::fabs(centre - plane[neighbour(g, r, g.dilations[i_d], y, x)]) / denom;
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
      const T e = std::exp(out[j * hw] - top);
      out[j * hw] = e;
      norm += e;
    }
    for (int64_t j = 0; j < P; ++j) out[j * hw] /= norm;
  }
}

// The propagation kernel's thread: one work item per (batch, group of kChannelsPerThread mask channels,
// pixel), i = (b * groups + group) * H * W + pixel, grid-stride. Consecutive items are consecutive pixels,
// so affinity loads coalesce and neighbour loads nearly so.
template <typename T>
C10_HOST_DEVICE inline void propagate_thread(const Geometry& g, const T* __restrict__ aff, const T* __restrict__ src,
                                             T* __restrict__ dst, const GridPos pos) {
  const int64_t hw = g.plane();
  const int64_t P = g.num_neighbours();
  const int64_t K = g.channels;
  const int64_t groups = channel_groups(K);
  const int64_t total = g.batch * groups * hw;
  for (int64_t i = pos.first(); i < total; i += pos.stride()) {
    const int64_t pix = i % hw, rest = i / hw;
    const int64_t group = rest % groups, b = rest / groups;
    const int64_t y = pix / g.width, x = pix % g.width;
    const int64_t k0 = group * kChannelsPerThread;
    const int64_t count = K - k0 < kChannelsPerThread ? K - k0 : kChannelsPerThread;
    const T* weights = aff + b * P * hw + pix;
    const T* planes = src + (b * K + k0) * hw;

    T acc[kChannelsPerThread];
    AESIPE_UNROLL
    for (int kk = 0; kk < kChannelsPerThread; ++kk) acc[kk] = T(0);
    for (int i_d = 0; i_d < g.num_dilations; ++i_d) {
      AESIPE_UNROLL
      for (int r = 0; r < kRingSize; ++r) {
        const T w = weights[(int64_t(i_d) * kRingSize + r) * hw];
        const int64_t nb = neighbour(g, r, g.dilations[i_d], y, x);
        AESIPE_UNROLL
        for (int kk = 0; kk < kChannelsPerThread; ++kk) {
          if (kk < count) acc[kk] += w * planes[kk * hw + nb];
        }
      }
    }
    AESIPE_UNROLL
    for (int kk = 0; kk < kChannelsPerThread; ++kk) {
      if (kk < count) dst[(b * K + k0 + kk) * hw + pix] = acc[kk];
    }
  }
}

}  // namespace cuda
}  // namespace aesipe
