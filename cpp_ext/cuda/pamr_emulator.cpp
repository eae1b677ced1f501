// Test build, never part of the op library: the CUDA kernels' per-thread code (cuda/pamr_thread.cuh) run on
// the host, over every (block, thread) of the grid that cuda/pamr_kernel.cu launches, through the same driver
// (pamr_driver.h). It lets the tests hold the CUDA index arithmetic against the reference on machines with
// no GPU (tests/ops/test_pamr_cuda_emulator.py; built by aesipe.ops._build.build_cuda_emulator()).
//
//   aesipe_cuda_emulator::pamr(image, mask, dilations, num_iter, threads_per_block, max_blocks, reverse)
//
// CPU tensors in, the op's result out. The grid is the .cu's (cuda::grid_blocks) with blocks of
// `threads_per_block` threads and at most `max_blocks` blocks (<= 0: the .cu's own 256 and 2^20); a small
// block and grid make every thread run several grid-stride rounds and the last round stop part-way.
// `reverse` runs blocks and threads in the opposite order: a kernel whose threads depended on each other's
// writes (a race on a GPU) would then give another result.
//
// Each launch works on private copies of its buffers placed between guard bands as long as the buffer, all
// NaNs with a payload of their own. A launch fails (RuntimeError) if it wrote into a guard band or left an
// output element unwritten; an out-of-range read brings a NaN into the result, which the tests' comparison
// with the reference reports.
#include "cuda/pamr_thread.cuh"
#include "pamr_driver.h"

#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace aesipe {
namespace cuda_emulator {
namespace {

using cuda::GridPos;

// NaN bit patterns: one marks never-written output elements, the other the guard bands.
template <typename T>
struct Marks;
template <>
struct Marks<float> {
  using Bits = uint32_t;
  static constexpr Bits kUnwritten = 0x7fc0deadu, kGuard = 0x7fc0beefu;
};
template <>
struct Marks<double> {
  using Bits = uint64_t;
  static constexpr Bits kUnwritten = 0x7ff8deaddeaddeadull, kGuard = 0x7ff8beefbeefbeefull;
};

// n values with n guard values on either side. (Bit patterns go through memcpy: no type punning.)
template <typename T>
class Guarded {
 public:
  using Bits = typename Marks<T>::Bits;

  Guarded(int64_t n, Bits fill) : n_(n), values_(size_t(3 * n), as_value(Marks<T>::kGuard)) {
    std::fill(values_.begin() + n, values_.begin() + 2 * n, as_value(fill));
  }
  T* data() { return values_.data() + n_; }
  void copy_from(const T* values) { std::memcpy(data(), values, size_t(n_) * sizeof(T)); }
  void copy_to(T* values) { std::memcpy(values, data(), size_t(n_) * sizeof(T)); }

  // Fails unless every element was written and nothing outside was.
  void check_written(const char* kernel) const {
    int64_t outside = 0, unwritten = 0;
    for (int64_t i = 0; i < 3 * n_; ++i) {
      const bool inside = i >= n_ && i < 2 * n_;
      const Bits bits = as_bits(values_[size_t(i)]);
      outside += !inside && bits != Marks<T>::kGuard;
      unwritten += inside && bits == Marks<T>::kUnwritten;
    }
    TORCH_CHECK(outside == 0, "aesipe_cuda_emulator: the ", kernel, " kernel wrote ", outside,
                " values outside its output buffer of ", n_);
    TORCH_CHECK(unwritten == 0, "aesipe_cuda_emulator: the ", kernel, " kernel left ", unwritten, " of ", n_,
                " output values unwritten");
  }

 private:
  static T as_value(Bits bits) {
    T value;
    std::memcpy(&value, &bits, sizeof(T));
    return value;
  }
  static Bits as_bits(T value) {
    Bits bits;
    std::memcpy(&bits, &value, sizeof(T));
    return bits;
  }

  int64_t n_;
  std::vector<T> values_;
};

struct Launch {
  int64_t threads_per_block, max_blocks;
  bool reverse;

  // Every (block, thread) of the grid the .cu launches for `work` items, one after another.
  template <typename Body>
  void run(int64_t work, const Body& body) const {
    const int64_t blocks = cuda::grid_blocks(work, threads_per_block, max_blocks);
    for (int64_t n = 0; n < blocks; ++n) {
      for (int64_t t = 0; t < threads_per_block; ++t) {
        const int64_t block = reverse ? blocks - 1 - n : n, thread = reverse ? threads_per_block - 1 - t : t;
        body(GridPos{block, threads_per_block, thread, blocks});
      }
    }
  }
};

// The launchers of cuda/pamr_kernel.cu, with the launch replaced by Launch::run.
struct Kernels {
  Launch launch;

  template <typename T>
  void affinity(const Geometry& g, const T* image, T* aff) const {
    const int64_t work = cuda::affinity_work(g);
    if (work == 0) return;
    Guarded<T> in(g.batch * g.channels * g.plane(), Marks<T>::kGuard);
    Guarded<T> out(g.batch * g.num_neighbours() * g.plane(), Marks<T>::kUnwritten);
    in.copy_from(image);
    launch.run(work, [&](GridPos pos) { cuda::affinity_thread<T>(g, in.data(), out.data(), pos); });
    out.check_written("affinity");
    out.copy_to(aff);
  }

  template <typename T>
  void propagate(const Geometry& g, const T* aff, const T* src, T* dst) const {
    const int64_t work = cuda::propagate_work(g);
    if (work == 0) return;
    Guarded<T> weights(g.batch * g.num_neighbours() * g.plane(), Marks<T>::kGuard);
    Guarded<T> in(g.batch * g.channels * g.plane(), Marks<T>::kGuard);
    Guarded<T> out(g.batch * g.channels * g.plane(), Marks<T>::kUnwritten);
    weights.copy_from(aff);
    in.copy_from(src);
    launch.run(work, [&](GridPos pos) { cuda::propagate_thread<T>(g, weights.data(), in.data(), out.data(), pos); });
    out.check_written("propagation");
    out.copy_to(dst);
  }
};

at::Tensor pamr_emulated(const at::Tensor& image, const at::Tensor& mask, at::IntArrayRef dilations,
                         int64_t num_iter, int64_t threads_per_block, int64_t max_blocks, bool reverse) {
  TORCH_CHECK_VALUE(image.device().is_cpu() && mask.device().is_cpu(),
                    "aesipe_cuda_emulator::pamr runs the CUDA thread code on CPU tensors");
  Launch launch{cuda::kThreadsPerBlock, cuda::kMaxBlocks, reverse};
  if (threads_per_block > 0) launch = Launch{threads_per_block, std::max<int64_t>(max_blocks, 1), reverse};
  return pamr_forward(image, mask, dilations, num_iter, Kernels{launch});
}

}  // namespace
}  // namespace cuda_emulator
}  // namespace aesipe

TORCH_LIBRARY(aesipe_cuda_emulator, m) {
  m.def("pamr(Tensor image, Tensor mask, int[] dilations, int num_iter, int threads_per_block, int max_blocks, "
        "bool reverse) -> Tensor");
}

TORCH_LIBRARY_IMPL(aesipe_cuda_emulator, CPU, m) { m.impl("pamr", &aesipe::cuda_emulator::pamr_emulated); }
