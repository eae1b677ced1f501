// The device-independent part of aesipe::pamr: input checks, dtype handling, buffers and the iteration loop.
//
// Each backend registers its own kernel for the op (TORCH_LIBRARY_IMPL in cpu/pamr_cpu.cpp and
// cuda/pamr_cuda.cpp, as torchvision does) by instantiating `pamr_forward` with its kernels; the test-only
// CUDA grid emulator (cuda/pamr_emulator.cpp) instantiates it with the CUDA thread code run on the host.
// Host code only: it needs ATen, which nvcc never has to parse.
//
// The affinity is computed once into a [B, 8*D, H, W] buffer; the iterations ping-pong between two
// mask buffers. Computation is in float32 (float64 if an input is float64); half/bfloat16 inputs are
// upcast once and the result converted back to the mask's dtype.
#pragma once

#include "pamr_common.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>

#include <algorithm>

namespace aesipe {

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}

// One check, one message per precondition. The Python fake kernel (aesipe/ops/_checks.py) mirrors
// these so that torch.export / torch.compile report the same errors as eager calls.
inline void check_inputs(const at::Tensor& image, const at::Tensor& mask, at::IntArrayRef dilations,
                         int64_t num_iter) {
  TORCH_CHECK_VALUE(image.dim() == 4, "aesipe::pamr: image must be 4-D [B, C, H, W], got ",
                    image.dim(), "-D");
  TORCH_CHECK_VALUE(mask.dim() == 4, "aesipe::pamr: mask must be 4-D [B, K, H, W], got ", mask.dim(),
                    "-D");
  TORCH_CHECK_VALUE(image.size(0) == mask.size(0),
                    "aesipe::pamr: image and mask must have the same batch size, got ", image.size(0),
                    " and ", mask.size(0));
  TORCH_CHECK_VALUE(image.size(2) == mask.size(2) && image.size(3) == mask.size(3),
                    "aesipe::pamr: image and mask must have the same height and width, got ",
                    image.size(2), "x", image.size(3), " and ", mask.size(2), "x", mask.size(3),
                    " (aesipe.pamr() resizes the mask; the op does not)");
  TORCH_CHECK_VALUE(image.size(1) >= 1, "aesipe::pamr: image must have at least one channel");
  TORCH_CHECK_VALUE(image.device() == mask.device(),
                    "aesipe::pamr: image and mask must be on the same device, got ", image.device(),
                    " and ", mask.device());
  TORCH_CHECK_TYPE(is_supported_float(image.scalar_type()),
                   "aesipe::pamr: image must be a floating-point tensor (float16, bfloat16, float32 or "
                   "float64), got ", image.scalar_type());
  TORCH_CHECK_TYPE(is_supported_float(mask.scalar_type()),
                   "aesipe::pamr: mask must be a floating-point tensor (float16, bfloat16, float32 or "
                   "float64), got ", mask.scalar_type());
  TORCH_CHECK_VALUE(!dilations.empty(), "aesipe::pamr: dilations must not be empty");
  TORCH_CHECK_VALUE(dilations.size() <= size_t(kMaxDilations), "aesipe::pamr: at most ", kMaxDilations,
                    " dilations are supported, got ", dilations.size());
  for (const int64_t d : dilations) {
    TORCH_CHECK_VALUE(d >= 1, "aesipe::pamr: every dilation must be >= 1, got ", dilations);
  }
  TORCH_CHECK_VALUE(num_iter >= 0, "aesipe::pamr: num_iter must be >= 0, got ", num_iter);
}

inline Geometry make_geometry(const at::Tensor& t, at::IntArrayRef dilations) {
  Geometry g;
  g.batch = t.size(0);
  g.channels = t.size(1);
  g.height = t.size(2);
  g.width = t.size(3);
  g.num_dilations = int(dilations.size());
  // Steps >= max(H, W) always clamp to the border, so clamping the dilation is exact (and keeps the
  // index arithmetic far from overflow for absurd dilations).
  const int64_t limit = std::max<int64_t>({g.height, g.width, 1});
  for (size_t i = 0; i < dilations.size(); ++i) g.dilations[i] = int(std::min(dilations[i], limit));
  return g;
}

// `Kernels` provides, for T in {float, double}:
//   template <typename T> void affinity(const Geometry&, const T* image, T* aff) const;
//   template <typename T> void propagate(const Geometry&, const T* aff, const T* src, T* dst) const;
// on raw contiguous buffers of the tensors' device (see pamr_common.h).
template <typename Kernels>
at::Tensor pamr_forward(const at::Tensor& image, const at::Tensor& mask, at::IntArrayRef dilations,
                        int64_t num_iter, const Kernels& kernels) {
  check_inputs(image, mask, dilations, num_iter);
  const auto contiguous = at::MemoryFormat::Contiguous;
  if (mask.numel() == 0) return at::empty(mask.sizes(), mask.options().memory_format(contiguous));
  // Always a fresh tensor: a custom op must not return an alias of its input.
  if (num_iter == 0) return mask.clone(contiguous);

  c10::OptionalDeviceGuard guard(image.device());
  const bool any_double = image.scalar_type() == at::kDouble || mask.scalar_type() == at::kDouble;
  const at::ScalarType work = any_double ? at::kDouble : at::kFloat;
  // No copy when already contiguous in the working dtype. (Not `to(work, ..., Contiguous)`: that
  // returns a transposed or sliced view unchanged, because its *suggested* format is contiguous.)
  const at::Tensor img = image.to(work).contiguous();
  const at::Tensor src = mask.to(work).contiguous();
  // If converting made a private copy of the mask, it can serve as the second ping-pong buffer.
  const bool src_is_private = !src.is_same(mask);

  const Geometry image_geometry = make_geometry(img, dilations);
  const Geometry mask_geometry = make_geometry(src, dilations);
  const at::Tensor aff = at::empty(
      {image_geometry.batch, image_geometry.num_neighbours(), image_geometry.height, image_geometry.width},
      img.options());
  at::Tensor buffers[2] = {at::empty(src.sizes(), src.options())};
  if (num_iter > 1) buffers[1] = src_is_private ? src : at::empty(src.sizes(), src.options());

  AT_DISPATCH_FLOATING_TYPES(work, "aesipe::pamr", [&] {
    kernels.template affinity<scalar_t>(image_geometry, img.const_data_ptr<scalar_t>(),
                                        aff.mutable_data_ptr<scalar_t>());
    const at::Tensor* in = &src;
    for (int64_t it = 0; it < num_iter; ++it) {
      at::Tensor& out = buffers[it % 2];
      kernels.template propagate<scalar_t>(mask_geometry, aff.const_data_ptr<scalar_t>(),
                                           in->const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
      in = &out;
    }
  });
  return buffers[(num_iter - 1) % 2].to(mask.scalar_type());
}

}  // namespace aesipe
