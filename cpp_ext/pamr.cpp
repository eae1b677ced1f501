// aesipe::pamr -- the schema and the Autograd kernel; each backend registers its own kernel in its own file
// (cpu/pamr_cpu.cpp, cuda/pamr_cuda.cpp), on the shared driver in pamr_driver.h.
//
//   pamr(Tensor image, Tensor mask, int[] dilations, int num_iter) -> Tensor
//
// image [B, C, H, W] and mask [B, K, H, W] at the same H x W (the bilinear resize of a low-resolution
// mask lives in Python, aesipe.ops.pamr). Returns a new contiguous [B, K, H, W] tensor of mask's dtype.
// Pure gathers, no atomics: results are deterministic on both devices.
//
// Autograd policy: refused. The Autograd kernel below raises when grad mode is on and an input
// requires grad; PAMR is meant to produce a fixed refinement target (docs/method.md: no gradient
// flows through PAMR), and a silently-wrong or silently-missing gradient would be worse than an error.
#include <ATen/core/Tensor.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/library.h>

namespace aesipe {
namespace {

constexpr const char* kNotDifferentiable =
    "aesipe::pamr is not differentiable (PAMR is detached by design: it produces a fixed refinement "
    "target). Detach the inputs (image.detach(), mask.detach()) or call it under torch.no_grad() / "
    "torch.inference_mode().";

// Autograd key: refuse instead of silently producing no gradient, then run the device kernel.
at::Tensor pamr_autograd(const at::Tensor& image, const at::Tensor& mask, at::IntArrayRef dilations,
                         int64_t num_iter) {
  TORCH_CHECK(!(c10::GradMode::is_enabled() && (image.requires_grad() || mask.requires_grad())),
              kNotDifferentiable);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("aesipe::pamr", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, at::IntArrayRef, int64_t)>();
  return op.call(image, mask, dilations, num_iter);
}

}  // namespace
}  // namespace aesipe

TORCH_LIBRARY(aesipe, m) {
  // Python-side registrations (fake kernel) live here; torch imports it when it needs them.
  m.set_python_module("aesipe.ops._registrations");
  m.def("pamr(Tensor image, Tensor mask, int[] dilations, int num_iter) -> Tensor",
        {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(aesipe, Autograd, m) { m.impl("pamr", &aesipe::pamr_autograd); }
