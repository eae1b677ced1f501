// Shared by the CPU kernels, the CUDA kernels (and their host emulator) and the op driver (pamr_driver.h).
//
// Deliberately tiny: the CUDA translation unit includes it, and every header nvcc has to parse costs
// compile time (cpp_ext/README.md), so nothing from ATen's Tensor API lives here. The kernels
// work on raw, contiguous [B, C, H, W] buffers described by a `Geometry`; pamr_driver.h owns tensors, dtypes,
// validation and allocation.
//
// Contract (mirrors aesipe/ops/pamr_reference.py, the executable specification):
//   * neighbour j of pixel p, j = 8 * i + r: ring cell r (row-major 3x3, centre skipped) at dilation
//     dilations[i]; replicate padding = clamping the coordinates into the image;
//   * s_c(p): unbiased std of the 9 * D taps (ring + centre once per dilation) of channel c;
//   * logit(p, j) = mean_c -|I_c(p) - I_c(q_j)| / (1e-8 + 0.1 * s_c(p)); affinity = softmax over j;
//   * each iteration: M(p) <- sum_j a(p, j) M(q_j).
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace aesipe {

constexpr int kRingSize = 8;
// Dilations travel by value inside Geometry (a CUDA kernel argument), hence a fixed upper bound.
constexpr int kMaxDilations = 64;
constexpr double kStdScale = 0.1;
constexpr double kEps = 1e-8;

// Ring cell r in 0..7 -> offsets, in the order of RING_OFFSETS in pamr_reference.py:
// (-1,-1) (-1,0) (-1,1) (0,-1) (0,1) (1,-1) (1,0) (1,1). Cells 0..8 of the 3x3 window minus the centre (4).
C10_HOST_DEVICE inline int ring_dy(int r) {
  const int cell = r < 4 ? r : r + 1;
  return cell / 3 - 1;
}
C10_HOST_DEVICE inline int ring_dx(int r) {
  const int cell = r < 4 ? r : r + 1;
  return cell % 3 - 1;
}

C10_HOST_DEVICE inline int64_t clamp_index(int64_t i, int64_t size) {
  return i < 0 ? 0 : (i >= size ? size - 1 : i);
}

// Shape of one pass. `channels` is C (image) for the affinity pass and K (mask) for propagation.
// Dilations are stored clamped to max(H, W): a larger step clamps to the same border pixel, so the
// result is identical and coordinate arithmetic cannot overflow.
struct Geometry {
  int64_t batch = 0;
  int64_t channels = 0;
  int64_t height = 0;
  int64_t width = 0;
  int num_dilations = 0;
  int dilations[kMaxDilations] = {};

  C10_HOST_DEVICE int64_t num_neighbours() const { return int64_t(kRingSize) * num_dilations; }
  C10_HOST_DEVICE int64_t plane() const { return height * width; }
};

// Raw-pointer kernels, instantiated for float and double (half/bfloat16 inputs are computed in float).
// image/src/dst are contiguous [B, channels, H, W]. `aff` holds B * P * H * W values (P = 8 * D),
// written by affinity and read by propagate of the same backend, in that backend's own layout:
// [B, P, H, W] on CUDA, pixel groups per row on the CPU (see cpu/pamr_kernel.cpp).
namespace cpu {
template <typename T>
void affinity(const Geometry& g, const T* image, T* aff);
template <typename T>
void propagate(const Geometry& g, const T* aff, const T* src, T* dst);
}  // namespace cpu

// Defined in cuda/pamr_kernel.cu (CUDA builds only). They launch on the current CUDA stream of the current
// device (the driver sets the device guard).
namespace cuda {
template <typename T>
void affinity(const Geometry& g, const T* image, T* aff);
template <typename T>
void propagate(const Geometry& g, const T* aff, const T* src, T* dst);
}  // namespace cuda

}  // namespace aesipe
