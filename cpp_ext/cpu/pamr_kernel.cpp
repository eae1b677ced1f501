// PAMR on the CPU: one affinity pass, then `num_iter` propagation passes (driven from pamr.cpp).
//
// Both passes are parallel over image rows (at::parallel_for; needs -fopenmp with torch's OpenMP
// backend, which _build.py passes). Memory: the affinity buffer [B, P, H, W] plus the caller's two
// ping-pong mask buffers -- never the [B, K, P, H, W] neighbour stack the reference materialises.
#include "pamr_common.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

// The row loops are compiled twice on x86-64 Linux with GCC -- AVX2+FMA (x86-64-v3) and baseline --
// and the dynamic loader picks one for the running CPU (an ifunc). The cached library thus stays
// portable (no -march=native) and still uses wide vectors where they exist.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define AESIPE_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define AESIPE_MULTIVERSION
#endif

namespace aesipe {
namespace cpu {
namespace {

// Per-neighbour step in pixels: step_y[j] = dy_j * d_j, step_x[j] = dx_j * d_j.
struct Steps {
  std::vector<int64_t> y, x;
  explicit Steps(const Geometry& g) : y(g.num_neighbours()), x(g.num_neighbours()) {
    for (int64_t j = 0; j < g.num_neighbours(); ++j) {
      const int d = g.dilations[j / kRingSize];
      y[j] = int64_t(ring_dy(int(j % kRingSize))) * d;
      x[j] = int64_t(ring_dx(int(j % kRingSize))) * d;
    }
  }
};

// Rows per task so that a task holds at least ~32k inner-loop steps: small images stay on one
// thread (the fork/join would cost more than the work), large ones split evenly.
int64_t row_grain(int64_t work_per_row) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_row));
}

// Calls f(x, i) for x in [0, W) with i = clamp(x + shift, 0, W - 1), the replicate-padded source
// column. Split into the left clamped run, the contiguous middle (where i = x + shift, so the loop body
// is a plain shifted stream the compiler vectorises) and the right clamped run.
template <typename F>
inline void for_each_shifted(int64_t width, int64_t shift, F&& f) {
  const int64_t lo = std::min(std::max<int64_t>(-shift, 0), width);  // x < lo reads column 0
  const int64_t hi = std::max(std::min(width - shift, width), lo);   // x >= hi reads column W-1
  for (int64_t x = 0; x < lo; ++x) f(x, int64_t(0));
  for (int64_t x = lo; x < hi; ++x) f(x, x + shift);
  for (int64_t x = hi; x < width; ++x) f(x, width - 1);
}

// Affinity of image rows [begin, end) (row = b * H + y). Row-wise: every step is a loop over the
// pixels x of one row, so it vectorises; per-pixel state (sums, std, max, total) is in row buffers.
template <typename T>
AESIPE_MULTIVERSION void affinity_rows(const Geometry& g, const Steps& steps, const T* image, T* aff,
                                       int64_t begin, int64_t end) {
  const int64_t H = g.height, W = g.width, HW = g.plane(), C = g.channels;
  const int64_t P = g.num_neighbours();
  const double repeats = g.num_dilations;     // the centre is one tap per dilation
  const double taps = 9.0 * g.num_dilations;  // ring + centre, per dilation
  std::vector<double> sum(W), sq(W);
  std::vector<T> denom(W), top(W), total(W);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / H, y = row % H;
    T* out = aff + b * P * HW + y * W;  // neighbour j's logits/weights: out[j * HW + x]

    for (int64_t c = 0; c < C; ++c) {
      const T* plane = image + (b * C + c) * HW;
      const T* centre = plane + y * W;
      // Two-pass unbiased std in double: a one-pass sum of squares would cancel badly on flat
      // regions with a large offset (e.g. 0..255 images), exactly where PAMR is sensitive.
      for (int64_t x = 0; x < W; ++x) sum[x] = repeats * centre[x];
      for (int64_t j = 0; j < P; ++j) {
        const T* src = plane + clamp_index(y + steps.y[j], H) * W;
        for_each_shifted(W, steps.x[j], [&](int64_t x, int64_t i) { sum[x] += src[i]; });
      }
      for (int64_t x = 0; x < W; ++x) {
        sum[x] /= taps;  // now the mean
        sq[x] = repeats * (centre[x] - sum[x]) * (centre[x] - sum[x]);
      }
      for (int64_t j = 0; j < P; ++j) {
        const T* src = plane + clamp_index(y + steps.y[j], H) * W;
        for_each_shifted(W, steps.x[j], [&](int64_t x, int64_t i) {
          const double dv = double(src[i]) - sum[x];
          sq[x] += dv * dv;
        });
      }
      for (int64_t x = 0; x < W; ++x) denom[x] = T(kEps) + T(kStdScale) * T(std::sqrt(sq[x] / (taps - 1.0)));
      // logit(p, j) accumulates -|I_c(p) - I_c(q_j)| / denom_c(p) over channels, in place in `aff`.
      for (int64_t j = 0; j < P; ++j) {
        const T* src = plane + clamp_index(y + steps.y[j], H) * W;
        T* logit = out + j * HW;
        if (c == 0) {
          for_each_shifted(W, steps.x[j], [&](int64_t x, int64_t i) {
            logit[x] = -std::abs(centre[x] - src[i]) / denom[x];
          });
        } else {
          for_each_shifted(W, steps.x[j], [&](int64_t x, int64_t i) {
            logit[x] -= std::abs(centre[x] - src[i]) / denom[x];
          });
        }
      }
    }

    // Mean over channels, then a max-shifted softmax over the P neighbours.
    const T inv_channels = T(1) / T(C);
    std::fill(top.begin(), top.end(), -std::numeric_limits<T>::infinity());
    for (int64_t j = 0; j < P; ++j) {
      T* logit = out + j * HW;
      for (int64_t x = 0; x < W; ++x) {
        logit[x] *= inv_channels;
        top[x] = std::max(top[x], logit[x]);
      }
    }
    std::fill(total.begin(), total.end(), T(0));
    for (int64_t j = 0; j < P; ++j) {
      T* logit = out + j * HW;
      for (int64_t x = 0; x < W; ++x) {
        logit[x] = std::exp(logit[x] - top[x]);
        total[x] += logit[x];
      }
    }
    for (int64_t j = 0; j < P; ++j) {
      T* weight = out + j * HW;
      for (int64_t x = 0; x < W; ++x) weight[x] /= total[x];
    }
  }
}

// Propagation into output rows [begin, end) (row = b * H + y), all K channels. Neighbour-outer,
// channel-inner: each affinity row a[b, j, y, :] is read once and applied to all K mask rows, which
// stay in L1/L2 while j advances.
template <typename T>
AESIPE_MULTIVERSION void propagate_rows(const Geometry& g, const Steps& steps, const T* aff, const T* src,
                                        T* dst, int64_t begin, int64_t end) {
  const int64_t H = g.height, W = g.width, HW = g.plane(), K = g.channels;
  const int64_t P = g.num_neighbours();
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / H, y = row % H;
    for (int64_t j = 0; j < P; ++j) {
      const T* __restrict__ a = aff + (b * P + j) * HW + y * W;
      const int64_t src_row = clamp_index(y + steps.y[j], H) * W;
      for (int64_t k = 0; k < K; ++k) {
        const T* __restrict__ s = src + (b * K + k) * HW + src_row;
        T* __restrict__ o = dst + (b * K + k) * HW + y * W;
        if (j == 0) {  // the first term initialises the row
          for_each_shifted(W, steps.x[j], [&](int64_t x, int64_t i) { o[x] = a[x] * s[i]; });
        } else {
          for_each_shifted(W, steps.x[j], [&](int64_t x, int64_t i) { o[x] += a[x] * s[i]; });
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void affinity(const Geometry& g, const T* image, T* aff) {
  const Steps steps(g);
  const int64_t work_per_row = g.width * g.num_neighbours() * g.channels;
  at::parallel_for(0, g.batch * g.height, row_grain(work_per_row), [&](int64_t begin, int64_t end) {
    affinity_rows(g, steps, image, aff, begin, end);
  });
}

template <typename T>
void propagate(const Geometry& g, const T* aff, const T* src, T* dst) {
  const Steps steps(g);
  const int64_t work_per_row = g.width * g.num_neighbours() * g.channels;
  at::parallel_for(0, g.batch * g.height, row_grain(work_per_row), [&](int64_t begin, int64_t end) {
    propagate_rows(g, steps, aff, src, dst, begin, end);
  });
}

template void affinity<float>(const Geometry&, const float*, float*);
template void affinity<double>(const Geometry&, const double*, double*);
template void propagate<float>(const Geometry&, const float*, const float*, float*);
template void propagate<double>(const Geometry&, const double*, const double*, double*);

}  // namespace cpu
}  // namespace aesipe
