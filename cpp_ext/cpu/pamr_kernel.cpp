// PAMR on the CPU: one affinity pass, then `num_iter` propagation passes (driven from pamr.cpp).
//
// Propagation is nearly all of the work (P * K multiply-adds per pixel and iteration), so it is shaped
// for the register file: a tile of 2 vectors of pixels x up to 4 mask channels stays in registers
// while the P neighbours stream past; each weight vector is loaded once per 4 channels and each
// result is stored once. Replicate padding costs nothing in that loop: each thread copies the source
// rows it needs into a private ring of x-padded rows (each row is copied once, then read by the 13
// output rows that reach it), and the y-clamp is a per-row pointer choice.
//
// Affinity layout (private to this file; pamr.cpp only allocates B * P * H * W values): row (b, y) is
// the P * W values at (b * H + y) * P * W; in it, group i of L pixels (L = vector lanes: 8 floats or
// 4 doubles) is stored [P][L] at i * P * L, and the last W % L pixels [P][W % L] after the groups.
// A tile thus reads its P weight vectors as one contiguous run, and a row's weights in memory order.
//
// Both passes are parallel over image rows (at::parallel_for). Every output value is computed by one
// thread in a fixed order: results are deterministic.
#include "pamr_common.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

// The row loops are compiled twice on x86-64 Linux with GCC -- AVX2+FMA (x86-64-v3) and baseline --
// and the dynamic loader picks one for the running CPU (an ifunc). The cached library thus stays
// portable (no -march=native) and still uses wide vectors where they exist. Everything those loops
// call is force-inlined into them: an out-of-line helper would be compiled for the baseline only.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define AESIPE_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#pragma GCC diagnostic ignored "-Wpsabi"  // 32-byte vector arguments of inlined helpers: no ABI use
#else
#define AESIPE_MULTIVERSION
#endif
#define AESIPE_INLINE inline __attribute__((always_inline))

namespace aesipe {
namespace cpu {
namespace {

// 32-byte vectors (GCC/Clang vector extensions): one AVX register in the x86-64-v3 clone, two SSE2
// registers in the baseline one. Pixels that do not fill a vector use the scalar type itself as `V`.
typedef float VecF __attribute__((vector_size(32)));
typedef double VecD __attribute__((vector_size(32)));
typedef int32_t VecI __attribute__((vector_size(32)));
template <typename T> struct VecOf;
template <> struct VecOf<float> { using type = VecF; };
template <> struct VecOf<double> { using type = VecD; };

template <typename V, typename T>
AESIPE_INLINE V load(const T* p) { V v; std::memcpy(&v, p, sizeof(V)); return v; }
template <typename V, typename T>
AESIPE_INLINE void store(T* p, const V& v) { std::memcpy(p, &v, sizeof(V)); }
template <typename To, typename From>
AESIPE_INLINE To bit_cast(const From& f) { To t; std::memcpy(&t, &f, sizeof(To)); return t; }

// exp(x) for x <= 0 (softmax logits minus their max), float: Cody-Waite reduction and the Cephes
// polynomial (about 1 ulp). Branch-free, so it vectorises where std::exp would be a scalar call.
// Below -87.3 it returns ~1e-38 instead of a denormal; that weight is negligible next to the max's 1.
template <typename V, typename I>
AESIPE_INLINE V exp_nonpositive(V x) {
  const V lo = V{} - 87.3365f, magic = V{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  x = x < lo ? lo : x;                                      // (NaN stays NaN)
  const V t = x * 1.44269504f + magic, n = t - magic;       // n = round(x / ln 2)
  const V r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // x - n ln 2, in two steps
  V p = ((((r * 1.9875691500e-4f + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
         1.6666665459e-1f) * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * bit_cast<V>(((bit_cast<I>(t) - bit_cast<I>(magic)) + 127) << 23);  // * 2^n
}
AESIPE_INLINE VecF exp_nonpos(VecF x) { return exp_nonpositive<VecF, VecI>(x); }
AESIPE_INLINE float exp_nonpos(float x) { return exp_nonpositive<float, int32_t>(x); }
// Per lane (double exp is not a hot path; std::sqrt sets errno, so it would not vectorise anyway).
template <typename V, typename F>
AESIPE_INLINE V per_lane(V v, F f) {
  if constexpr (std::is_arithmetic<V>::value) return f(v);
  else {
    for (size_t i = 0; i < sizeof(V) / sizeof(v[0]); ++i) v[i] = f(v[i]);
    return v;
  }
}
template <typename V> AESIPE_INLINE V exp_nonpos(V x) { return per_lane(x, [](double v) { return std::exp(v); }); }
template <typename V> AESIPE_INLINE V lane_sqrt(V x) { return per_lane(x, [](auto v) { return std::sqrt(v); }); }
// |v|; for floats by clearing the sign bit, one instruction where the select is three.
template <typename V> AESIPE_INLINE V abs_value(V v) { return v < V{} ? -v : v; }
AESIPE_INLINE VecF abs_value(VecF v) { return bit_cast<VecF>(bit_cast<VecI>(v) & 0x7fffffff); }

// Per-neighbour step in pixels: y[j] = dy_j * d_j, x[j] = dx_j * d_j; `reach` = the largest dilation.
struct Steps {
  std::vector<int64_t> y, x;
  int64_t reach = 0;
  explicit Steps(const Geometry& g) : y(g.num_neighbours()), x(g.num_neighbours()) {
    for (int64_t j = 0; j < g.num_neighbours(); ++j) {
      const int d = g.dilations[j / kRingSize];
      y[j] = int64_t(ring_dy(int(j % kRingSize))) * d;
      x[j] = int64_t(ring_dx(int(j % kRingSize))) * d;
      reach = std::max<int64_t>(reach, d);
    }
  }
};

// Rows per task so that a task holds at least ~32k inner-loop steps: small images stay on one
// thread (the fork/join would cost more than the work), large ones split evenly.
int64_t row_grain(int64_t work_per_row) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_row));
}

// out[t] = row[clamp(first + t, 0, W - 1)] for t in [0, n): one replicate-padded row.
template <typename T>
AESIPE_INLINE void pad_copy(const T* row, int64_t W, int64_t first, int64_t n, T* out) {
  const int64_t lo = std::min(std::max<int64_t>(-first, 0), n);  // t < lo reads column 0
  const int64_t hi = std::max(std::min(W - first, n), lo);        // t >= hi reads column W-1
  for (int64_t t = 0; t < lo; ++t) out[t] = row[0];
  for (int64_t t = lo; t < hi; ++t) out[t] = row[first + t];
  for (int64_t t = hi; t < n; ++t) out[t] = row[W - 1];
}

// Affinity of NV vectors of pixels of one row, vector n = pixels [x + n L, x + n L + L). tap[c * P + j]
// points at neighbour j of pixel 0 in padded image channel c, centre[c] at the pixel itself; `inv` is
// scratch for C * NV vectors. Weight j of vector n goes to out + j * out_j + n * out_n. Every sum runs
// over j (and c) in order, as in the reference, so the rounding follows it closely; the NV vectors are
// independent dependency chains, which keeps the adders busy.
template <typename V, int NV, typename T>
AESIPE_INLINE void affinity_tile(int64_t C, int64_t P, int num_dilations, const T* const* centre,
                                 const T* const* tap, int64_t x, T* inv, T* out, int64_t out_j, int64_t out_n) {
  constexpr int L = sizeof(V) / sizeof(T);
  const T repeats = T(num_dilations), taps = T(9 * num_dilations);  // centre once per dilation
  for (int64_t c = 0; c < C; ++c) {
    // Two-pass unbiased std over the 9 * D taps: no cancellation on flat regions with an offset.
    const T* const* t = tap + c * P;
    V mid[NV], mean[NV], sq[NV];
    for (int n = 0; n < NV; ++n) mid[n] = load<V>(centre[c] + x + n * L), mean[n] = mid[n] * repeats;
    for (int64_t j = 0; j < P; ++j)
      for (int n = 0; n < NV; ++n) mean[n] += load<V>(t[j] + x + n * L);
    for (int n = 0; n < NV; ++n) mean[n] /= taps, sq[n] = (mid[n] - mean[n]) * (mid[n] - mean[n]) * repeats;
    for (int64_t j = 0; j < P; ++j)
      for (int n = 0; n < NV; ++n) {
        const V dv = load<V>(t[j] + x + n * L) - mean[n];
        sq[n] += dv * dv;
      }
    // 1 / (eps + 0.1 std): one division per pixel and channel rather than one per neighbour.
    for (int n = 0; n < NV; ++n)
      store(inv + (c * NV + n) * L, T(1) / (lane_sqrt(sq[n] / (taps - T(1))) * T(kStdScale) + T(kEps)));
  }
  // logit_j = mean_c -|I_c(p) - I_c(q_j)| / den_c, accumulated channel by channel in `out`.
  const T inv_channels = T(1) / T(C);
  V top[NV] = {}, total[NV] = {};
  for (int64_t c = 0; c < C; ++c) {
    V mid[NV], iv[NV];
    for (int n = 0; n < NV; ++n) mid[n] = load<V>(centre[c] + x + n * L), iv[n] = load<V>(inv + (c * NV + n) * L);
    for (int64_t j = 0; j < P; ++j)
      for (int n = 0; n < NV; ++n) {
        T* o = out + j * out_j + n * out_n;
        const V term = abs_value(mid[n] - load<V>(tap[c * P + j] + x + n * L)) * iv[n];
        V logit = c == 0 ? -term : load<V>(o) - term;
        if (c == C - 1) {
          logit *= inv_channels;
          top[n] = j == 0 ? logit : (logit > top[n] ? logit : top[n]);
        }
        store(o, logit);
      }
  }
  // Max-shifted softmax over j.
  for (int64_t j = 0; j < P; ++j)
    for (int n = 0; n < NV; ++n) {
      T* o = out + j * out_j + n * out_n;
      const V e = exp_nonpos(load<V>(o) - top[n]);
      total[n] += e;
      store(o, e);
    }
  for (int n = 0; n < NV; ++n) total[n] = T(1) / total[n];
  for (int64_t j = 0; j < P; ++j)
    for (int n = 0; n < NV; ++n) store(out + j * out_j + n * out_n, load<V>(out + j * out_j + n * out_n) * total[n]);
}

// Image rows [begin, end) (row = b * H + y) of the x-padded image `padded` [B, C, H, Wp].
template <typename T>
AESIPE_MULTIVERSION void affinity_rows(const Geometry& g, const Steps& st, const T* padded, int64_t Wp,
                                       T* aff, int64_t begin, int64_t end) {
  using V = typename VecOf<T>::type;
  constexpr int64_t L = sizeof(V) / sizeof(T);
  const int64_t H = g.height, W = g.width, C = g.channels, P = g.num_neighbours(), groups = W / L;
  const int D = g.num_dilations;
  std::vector<const T*> centre(C), tap(C * P);
  std::vector<T> inv(C * 2 * L);  // T, not V: heap memory is not guaranteed to be 32-byte aligned
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / H, y = row % H;
    for (int64_t c = 0; c < C; ++c) {
      const T* plane = padded + (b * C + c) * H * Wp + st.reach;
      centre[c] = plane + y * Wp;
      for (int64_t j = 0; j < P; ++j) tap[c * P + j] = plane + clamp_index(y + st.y[j], H) * Wp + st.x[j];
    }
    T* out = aff + row * P * W;
    int64_t i = 0;
    for (; i + 2 <= groups; i += 2)
      affinity_tile<V, 2>(C, P, D, centre.data(), tap.data(), i * L, inv.data(), out + i * P * L, L, P * L);
    if (i < groups) affinity_tile<V, 1>(C, P, D, centre.data(), tap.data(), i * L, inv.data(), out + i * P * L, L, 0);
    for (int64_t x = groups * L; x < W; ++x)  // the last W % L pixels, one at a time
      affinity_tile<T, 1>(C, P, D, centre.data(), tap.data(), x, inv.data(), out + groups * P * L + x % L, W % L, 0);
  }
}

// Propagation of one tile: NV vectors of output pixels x KB channels, summed over the neighbours in
// order j = 0..P-1. Weight j of vector n is at a + j * a_j + n * a_n; src[j] + off is neighbour j of
// the tile's first pixel in the block's first channel of the padded ring; channel k is k * cs further.
template <typename V, int KB, int NV, typename T>
AESIPE_INLINE void propagate_tile(const T* a, int64_t a_j, int64_t a_n, const T* const* src, int64_t off,
                                  int64_t cs, int64_t P, T* out, int64_t HW) {
  constexpr int L = sizeof(V) / sizeof(T);
  V acc[KB][NV];
  for (int k = 0; k < KB; ++k)
    for (int n = 0; n < NV; ++n) acc[k][n] = V{};
  for (int64_t j = 0; j < P; ++j, a += a_j) {
    const T* s = src[j] + off;
    V w[NV];
    for (int n = 0; n < NV; ++n) w[n] = load<V>(a + n * a_n);
    for (int k = 0; k < KB; ++k)
      for (int n = 0; n < NV; ++n) acc[k][n] += w[n] * load<V>(s + k * cs + n * L);
  }
  for (int k = 0; k < KB; ++k)
    for (int n = 0; n < NV; ++n) store(out + k * HW + n * L, acc[k][n]);
}

// What the next output row will read: its weights, channel 0 of the source row copied next into the
// ring, channel 0 of its output (nullptr: nothing). The hardware prefetchers cannot follow that many
// streams (P weight vectors, K source and K output rows) and a row's first sweep would stall on memory,
// so each tile prefetches a share of it: 1/parts of the next row's weights for the same tile (parts =
// channel blocks), and its own columns and channels of the next source and output rows.
template <typename T>
struct Lookahead { const T *aff, *src, *out; int64_t part, parts; };

// Channel block [k, k + KB) of one output row, tiles left to right. Channel blocks are the outer loop
// so that the ring lines a tile reads (13 rows x KB channels, read again by the tiles within +-reach)
// are still in L1 for the next tiles; with all K channels per tile they would not fit.
template <typename V, int KB, typename T>
AESIPE_INLINE void propagate_block(const T* a, const T* const* src, int64_t W, int64_t k, int64_t cs, int64_t P,
                                   T* out, int64_t HW, const Lookahead<T>& next) {
  constexpr int64_t L = sizeof(V) / sizeof(T), kLine = 64;
  const int64_t groups = W / L, tile_bytes = 2 * P * L * int64_t(sizeof(T));
  const int64_t share = (tile_bytes / kLine + next.parts - 1) / next.parts * kLine;
  const int64_t w_begin = next.part * share, w_end = std::min(tile_bytes, w_begin + share);
  out += k * HW;
  int64_t i = 0;
  for (; i + 2 <= groups; i += 2) {
    if (next.aff != nullptr) {  // (set together with next.out)
      const char* w = reinterpret_cast<const char*>(next.aff + i * P * L);
      for (int64_t b = w_begin; b < w_end; b += kLine) __builtin_prefetch(w + b, 0, 2);
      for (int kk = 0; kk < KB; ++kk) __builtin_prefetch(next.out + (k + kk) * HW + i * L, 1, 2);
    }
    if (next.src != nullptr)
      for (int kk = 0; kk < KB; ++kk) __builtin_prefetch(next.src + (k + kk) * HW + i * L, 0, 2);
    propagate_tile<V, KB, 2>(a + i * P * L, L, P * L, src, k * cs + i * L, cs, P, out + i * L, HW);
  }
  if (i < groups) propagate_tile<V, KB, 1>(a + i * P * L, L, 0, src, k * cs + i * L, cs, P, out + i * L, HW);
  for (int64_t x = groups * L; x < W; ++x)  // the last W % L pixels, one at a time
    propagate_tile<T, KB, 1>(a + groups * P * L + x % L, W % L, 0, src, k * cs + x, cs, P, out + x, HW);
}

// At most this many channels per tile: KB * 2 accumulators + 2 weights fit the 16 AVX registers.
constexpr int kMaxChannelBlock = 4;

// Propagation into output rows [begin, end) (row = b * H + y).
template <typename T>
AESIPE_MULTIVERSION void propagate_rows(const Geometry& g, const Steps& st, const T* aff, const T* src,
                                        T* dst, int64_t begin, int64_t end) {
  using V = typename VecOf<T>::type;
  const int64_t H = g.height, W = g.width, HW = g.plane(), K = g.channels, P = g.num_neighbours();
  // Ring of the 2 * reach + 1 source rows an output row can reach, each K channels of `cs` values.
  // Rows start 64-byte aligned with column 0 at `lead` (>= reach, a multiple of 64 bytes), so the
  // loads of the dx = 0 neighbours never straddle two cache lines.
  constexpr int64_t kLine = 64 / sizeof(T);
  const int64_t reach = st.reach, slots = std::min(2 * reach + 1, H);
  const int64_t lead = (reach + kLine - 1) / kLine * kLine, cs = (lead + W + reach + kLine - 1) / kLine * kLine;
  std::unique_ptr<T[]> storage(new T[slots * K * cs + kLine]);
  T* const ring = storage.get() + (kLine - reinterpret_cast<uintptr_t>(storage.get()) / sizeof(T) % kLine) % kLine;
  const int64_t blocks = (K + kMaxChannelBlock - 1) / kMaxChannelBlock;
  std::vector<const T*> srcs(P);
  for (int64_t row = begin; row < end;) {  // one image at a time
    const int64_t b = row / H, y0 = row % H, y1 = std::min(H, y0 + (end - row));
    const T* image = src + b * K * HW;
    int64_t next = std::max<int64_t>(0, y0 - reach);  // the next source row to copy into the ring
    for (int64_t y = y0; y < y1; ++y) {
      for (; next <= std::min(H - 1, y + reach); ++next)
        for (int64_t k = 0; k < K; ++k)
          pad_copy(image + k * HW + next * W, W, -lead, lead + W + reach, ring + ((next % slots) * K + k) * cs);
      for (int64_t j = 0; j < P; ++j)
        srcs[j] = ring + (clamp_index(y + st.y[j], H) % slots) * K * cs + lead + st.x[j];
      const T* a = aff + (b * H + y) * P * W;
      T* out = dst + b * K * HW + y * W;
      const bool more = y + 1 < y1;
      Lookahead<T> ahead{more ? a + P * W : nullptr, more && next < H ? image + next * W : nullptr,
                         more ? out + W : nullptr, 0, blocks};
      // K in near-equal blocks of at most kMaxChannelBlock (21 -> 3,3,3,4,4,4): no thin remainder.
      for (int64_t k = 0; ahead.part < blocks; ++ahead.part) {  // ahead.part = the channel block
        const int64_t kb = (K - k) / (blocks - ahead.part);
        switch (kb) {
          case 1: propagate_block<V, 1>(a, srcs.data(), W, k, cs, P, out, HW, ahead); break;
          case 2: propagate_block<V, 2>(a, srcs.data(), W, k, cs, P, out, HW, ahead); break;
          case 3: propagate_block<V, 3>(a, srcs.data(), W, k, cs, P, out, HW, ahead); break;
          default: propagate_block<V, 4>(a, srcs.data(), W, k, cs, P, out, HW, ahead); break;
        }
        k += kb;
      }
    }
    row += y1 - y0;
  }
}

// The affinity buffer is usually fresh memory from the allocator (tens of MB), and touching it first
// costs one page fault per 4 KiB -- under virtualisation comparable to the whole affinity pass.
// Transparent huge pages, where the system grants them on request, make that one fault per 2 MiB.
// The advice changes no contents and covers only whole 2 MiB pages inside the buffer.
void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t first = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)data, (void)bytes;
#endif
}

}  // namespace

template <typename T>
void affinity(const Geometry& g, const T* image, T* aff) {
  const Steps st(g);
  const int64_t H = g.height, W = g.width, Wp = W + 2 * st.reach;
  advise_huge_pages(aff, size_t(g.batch * g.num_neighbours() * g.plane()) * sizeof(T));
  // x-pad the image once (it has only C planes), so that every tap is a plain shifted load.
  std::unique_ptr<T[]> padded(new T[g.batch * g.channels * H * Wp]);
  at::parallel_for(0, g.batch * g.channels * H, row_grain(Wp), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) pad_copy(image + r * W, W, -st.reach, Wp, padded.get() + r * Wp);
  });
  const int64_t work_per_row = W * g.num_neighbours() * g.channels;
  at::parallel_for(0, g.batch * H, row_grain(work_per_row), [&](int64_t begin, int64_t end) {
    affinity_rows(g, st, padded.get(), Wp, aff, begin, end);
  });
}

template <typename T>
void propagate(const Geometry& g, const T* aff, const T* src, T* dst) {
  const Steps st(g);
  // A task re-copies up to 2 * reach rows around its range into its ring: keep tasks >= reach rows.
  const int64_t grain = std::max(row_grain(g.width * g.num_neighbours() * g.channels), st.reach);
  at::parallel_for(0, g.batch * g.height, grain, [&](int64_t begin, int64_t end) {
    propagate_rows(g, st, aff, src, dst, begin, end);
  });
}

template void affinity<float>(const Geometry&, const float*, float*);
template void affinity<double>(const Geometry&, const double*, double*);
template void propagate<float>(const Geometry&, const float*, const float*, float*);
template void propagate<double>(const Geometry&, const double*, const double*, double*);

}  // namespace cpu
}  // namespace aesipe
