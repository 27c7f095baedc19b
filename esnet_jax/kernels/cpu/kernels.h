// ESNet's CPU compute kernels: plain C++17 with GCC/Clang vector extensions, no XLA headers
// (kernels.cc binds them to XLA's FFI; selftest.cc checks them against scalar loops).
//
// One source for every instruction set. `vf` is the machine's native float vector (16
// lanes with AVX-512, 8 with AVX2/AVX, 4 with NEON or SSE), written with the compiler's
// vector extension, so `a * b + c` is one vfmadd / fmla (with -ffp-contract=fast), loads
// and stores are unaligned vector moves, and a broadcast is `s - vf{}`. The kernels are
// written in these vectors and in register blocks whose shape is a compile-time choice
// per ISA (the k* constants below): an accumulator tile of NB pixels (or input
// channels) by NV vectors of output channels lives in registers for a whole reduction,
// and must leave room for the NV weight vectors and a broadcast:
//   NB * NV + NV + 1 <= registers (x86 without AVX-512: 16 ymm; AVX-512 and NEON: 32).
// A portable SIMD library (highway) would do the same with a dependency to install;
// intrinsics per ISA would triple the source. The compiler is trusted only with what it
// does reliably: fully unrolled loops over compile-time trip counts on local arrays of
// vectors (kept in registers), contraction of a*b+c, and unaligned vector moves (as a
// dereference of the under-aligned, may_alias type: GCC 12 routes a memcpy of a vector
// through the stack, which took the AVX2 build from 33 to 12 GF/s per core).
//
// At 32 or more channels, 3- and 5-tap factorised convolutions go through Winograd
// F(4, 3) and F(2, 5) (winograd_task): the direct tiles run at the FMA units' peak
// already (as do XLA's at these widths), so the only speed left is in fewer FMAs: 6
// products per 4 output pixels instead of 12 for k = 3, 6 per 2 instead of 10 for k = 5.
// At 16 channels the transforms cost more than they save (measured), so those stay
// direct.
//
// bfloat16 (issue #41): the tiles are templates on a dot-product policy (F32Dot, BF16Dot,
// BF16Load below). On AVX512_BF16 the convolutions multiply bf16 pairs of input
// channels with vdpbf16ps (32 products into 16 float32 sums, twice an FMA's), weights
// packed in pairs of input channels, sums in float32, rounded to bf16 once per output;
// the weight gradient pairs adjacent pixels instead (pair_pixels). Winograd's transformed
// inputs and weights are rounded to bf16 too (a larger error than the direct tiles',
// bounded in tests/test_kernels_bf16.py).
//
// Layouts are NHWC, float32 or bfloat16 (uint16_t). Channel counts: conv_kx1 and conv2d
// Cout % 16 == 0 (any Cin; even in bf16), wgrad Cout % 16 == 0 (any Cin), channel sums
// C % 16 == 0, upsample16 Cin == 16 and Cout <= 32. 16 is a multiple of every ISA's lane
// count, so no kernel needs masks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace esnet {

#if defined(ESNET_LANES)  // Set by the compile command: the self-test checks the
// AVX-512 layout (16 lanes, its register blocks) on any CPU, the compiler splitting
// each vector into the machine's own.
inline constexpr const char* kIsa = "forced-lanes";
#elif defined(__AVX512F__)
#define ESNET_LANES 16
inline constexpr const char* kIsa = "avx512";
#elif defined(__AVX__)
#define ESNET_LANES 8
inline constexpr const char* kIsa = "avx2";
#elif defined(__aarch64__) || defined(__ARM_NEON)
#define ESNET_LANES 4
inline constexpr const char* kIsa = "neon";
#else
#define ESNET_LANES 4
inline constexpr const char* kIsa = "generic";
#endif

constexpr int L = ESNET_LANES;  // floats per vector
// aligned(4): a vf may sit at any float's address (unaligned vector moves); may_alias:
// it reads and writes float arrays.
typedef float vf __attribute__((vector_size(ESNET_LANES * 4), aligned(4), may_alias));
static_assert(16 % L == 0, "16 channels must be a whole number of vectors");

static inline vf load(const float* p) { return *reinterpret_cast<const vf*>(p); }
static inline void store(float* p, vf v) { *reinterpret_cast<vf*>(p) = v; }
static inline vf splat(float s) { return s - vf{}; }  // s - 0 is s, exactly: a broadcast
static inline vf relu(vf v) { return v > vf{} ? v : vf{}; }

// --- Activations in float32 or bfloat16 ------------------------------------------------
// bfloat16 is stored as uint16_t (the upper half of a float32), on every ISA: widening is
// a shift, narrowing rounds to nearest even (NaNs are not produced by these kernels'
// inputs, so they are not special-cased). Arithmetic is always float32.
typedef uint16_t bf16;
typedef uint16_t vh __attribute__((vector_size(ESNET_LANES * 2), aligned(2), may_alias));
typedef uint32_t vu __attribute__((vector_size(ESNET_LANES * 4)));

static inline float scalar(float s) { return s; }
static inline float scalar(bf16 s) {
  const uint32_t u = uint32_t(s) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static inline bf16 to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return bf16((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static inline vf load_act(const float* p) { return load(p); }
static inline vf load_act(const bf16* p) {
  return (vf)(__builtin_convertvector(*reinterpret_cast<const vh*>(p), vu) << 16);
}
static inline void store_act(float* p, vf v) { store(p, v); }
static inline void store_act(bf16* p, vf v) {
  const vu u = (vu)v;
  *reinterpret_cast<vh*>(p) = __builtin_convertvector((u + 0x7fffu + ((u >> 16) & 1u)) >> 16, vh);
}

// --- Dot-product policies: how a tile multiplies activations by weights ------------------
// F32Dot: float32 activations and weights, one input channel per FMA (every ISA).
// BF16Dot (AVX512_BF16): bfloat16 activations and weights, two input channels per
// vdpbf16ps (32 products into 16 float32 sums), float32 accumulation. Its weights are
// packed in pairs of input channels, (cin / 2, cout, 2) per tap (pack_weights), so one
// 64-byte load holds 16 output channels of two inputs, and an input pixel's two
// adjacent channels are one 32-bit broadcast.
struct F32Dot {
  using T = float;   // activations
  using WT = float;  // weights as the products read them
  using WV = vf;     // a vector of weights
  using SV = vf;     // a broadcast input
  static constexpr int kStep = 1;  // input channels per multiply-add
  // Weight (c, o) of a (cin, ldw) matrix; c a multiple of kStep.
  static int64_t widx(int64_t c, int64_t ldw, int64_t o) { return c * ldw + o; }
  static WV wload(const WT* p) { return load(p); }
  static SV bcast(const T* p) { return splat(*p); }
  static vf madd(vf acc, SV s, WV w) { return s * w + acc; }
};
#if defined(__AVX512BF16__) && ESNET_LANES == 16
#define ESNET_BF16_DOT 1
struct BF16Dot {
  using T = bf16;
  using WT = bf16;
  using WV = __m512i;
  using SV = __m512i;
  static constexpr int kStep = 2;
  static int64_t widx(int64_t c, int64_t ldw, int64_t o) { return c * ldw + 2 * o; }
  static WV wload(const WT* p) { return _mm512_loadu_si512(p); }
  static SV bcast(const T* p) {
    int32_t pair;
    std::memcpy(&pair, p, 4);
    return _mm512_set1_epi32(pair);
  }
  static vf madd(vf acc, SV s, WV w) {
    return (vf)_mm512_dpbf16_ps((__m512)acc, (__m512bh)s, (__m512bh)w);
  }
};
#endif

// BF16Load: bfloat16 activations and weights read into float32 FMAs (every ISA): half
// the memory traffic of F32Dot, the same arithmetic.
struct BF16Load {
  using T = bf16;
  using WT = bf16;
  using WV = vf;
  using SV = vf;
  static constexpr int kStep = 1;
  static int64_t widx(int64_t c, int64_t ldw, int64_t o) { return c * ldw + o; }
  static WV wload(const WT* p) { return load_act(p); }
  static SV bcast(const T* p) { return splat(scalar(*p)); }
  static vf madd(vf acc, SV s, WV w) { return s * w + acc; }
};

// Weights (rows, cout) float32 as P's products read them: F32Dot uses them as they are
// (returns w); BF16Dot rounds them to bfloat16 in pairs of rows into `packed` (rows even).
template <class P>
static inline const typename P::WT* pack_weights(const float* w, int64_t rows, int64_t cout,
                                                 typename P::WT* packed) {
  if constexpr (std::is_same_v<typename P::WT, float>) {
    return w;
  } else {
    for (int64_t r = 0; r < rows; r += 2)
      for (int64_t o = 0; o < cout; ++o) {
        packed[r * cout + 2 * o] = to_bf16(w[r * cout + o]);
        packed[r * cout + 2 * o + 1] = to_bf16(w[(r + 1) * cout + o]);
      }
    return packed;
  }
}

// Register blocks per ISA: conv_kx1 computes tiles of kConvPixels pixels by kConvVectors
// vectors of output channels (a tile's width is kConvVectors * L channels, a multiple of
// 16 or Cout must be a multiple of it; kConvNarrow* is the tile for the rest of Cout, a
// multiple of 16 only). The weight gradient accumulates kWgradInputs input channels by
// kWgradVectors vectors of output channels.
#if ESNET_LANES == 16  // 32 zmm: 6 x 64 and 12 x 32 channels, 12 x 16 for the rest.
constexpr int kConvPixels = 6, kConvVectors = 4;
constexpr int kConvMidPixels = 12, kConvMidVectors = 2;
constexpr int kConvNarrowPixels = 12, kConvNarrowVectors = 1;
constexpr int kWgradInputs = 8, kWgradVectors = 2;
constexpr int kWgrad16Inputs = 16, kWgrad16Vectors = 1;
constexpr int kAccumulators = 24;  // upsample16's tiles: 24 / (vectors per pixel) pixels
#elif ESNET_LANES == 8  // AVX2: 16 ymm registers of 8 floats.
// 6 pixels x 16 channels: 12 accumulators, 2 weight vectors and a broadcast fill 15 of
// 16 registers, 8 loads per 12 FMAs. 3 x 32 channels would need 17: the weights would
// be reloaded for every pixel (11 loads per 12 FMAs), measured up to 10% slower on Zen 2.
constexpr int kConvPixels = 6, kConvVectors = 2;
constexpr int kConvMidPixels = 6, kConvMidVectors = 2;
constexpr int kConvNarrowPixels = 6, kConvNarrowVectors = 2;
constexpr int kWgradInputs = 6, kWgradVectors = 2;
constexpr int kWgrad16Inputs = 6, kWgrad16Vectors = 2;
constexpr int kAccumulators = 12;
#else  // NEON: 32 q registers of 4 floats (or generic 4-lane vectors).
// 5 pixels x 16 channels: 20 accumulators, 4 weight vectors and 5 input scalars (GCC
// multiplies by vector element, fmla v.4s, v.4s, s[0]): 29 of 32. 6 pixels spill.
constexpr int kConvPixels = 5, kConvVectors = 4;
constexpr int kConvMidPixels = 5, kConvMidVectors = 4;
constexpr int kConvNarrowPixels = 5, kConvNarrowVectors = 4;
constexpr int kWgradInputs = 5, kWgradVectors = 4;
constexpr int kWgrad16Inputs = 5, kWgrad16Vectors = 4;
constexpr int kAccumulators = 20;
#endif

// acc[j][v] += sum_c src[j * sstride + c] * w[c * ldw + v * L] for NB pixels j.
// CIN > 0 fixes cin at compile time (the loop over it is then unrolled).
// With P's products (w laid out as P::widx says).
template <class P, int NB, int NV, int CIN = 0>
static inline __attribute__((always_inline)) void tile_dot(vf (&acc)[NB][NV],
                                                           const typename P::T* src,
                                                           int64_t sstride,
                                                           const typename P::WT* w,
                                                           int64_t ldw, int64_t cin) {
  if (CIN) cin = CIN;
  for (int64_t c = 0; c < cin; c += P::kStep) {
    typename P::WV wv[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) wv[v] = P::wload(w + P::widx(c, ldw, v * L));
#pragma GCC unroll 16
    for (int j = 0; j < NB; ++j) {
      const typename P::SV s = P::bcast(src + j * sstride + c);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[j][v] = P::madd(acc[j][v], s, wv[v]);
    }
  }
}
template <int NB, int NV, int CIN = 0>
static inline __attribute__((always_inline)) void tile_fma(vf (&acc)[NB][NV], const float* src,
                                                           int64_t sstride, const float* w,
                                                           int64_t ldw, int64_t cin) {
  tile_dot<F32Dot, NB, NV, CIN>(acc, src, sstride, w, ldw, cin);
}

// tile_dot for one pixel: acc[v] += sum_c src[c] * w[c * ldw + v * L].
template <class P, int NV, int CIN = 0>
static inline __attribute__((always_inline)) void pixel_dot(vf (&acc)[NV],
                                                            const typename P::T* src,
                                                            const typename P::WT* w,
                                                            int64_t ldw, int64_t cin) {
  if (CIN) cin = CIN;
  for (int64_t c = 0; c < cin; c += P::kStep) {
    const typename P::SV s = P::bcast(src + c);
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] = P::madd(acc[v], s, P::wload(w + P::widx(c, ldw, v * L)));
  }
}

// Pixels [w0, w0 + NB) and channels [o0, o0 + NV * L) of output row (n, h) of the
// factorised convolution: y = relu?(b + sum_t x(tap t) @ w[t] (+ res)), 'same' padding.
template <class P, int NB, int NV, int CIN>
static inline void conv_kx1_tile(const typename P::T* x, const typename P::WT* w, const float* b,
                                 const typename P::T* res, typename P::T* y, int64_t n,
                                 int64_t h, int64_t H,
                                 int64_t W, int64_t cin, int64_t cout, int64_t k, int64_t d,
                                 bool vertical, bool use_relu, int64_t w0, int64_t o0) {
  if (CIN) cin = CIN;
  const int64_t p = (k - 1) / 2 * d;
  vf acc[NB][NV];
#pragma GCC unroll 16
  for (int j = 0; j < NB; ++j)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[j][v] = load(b + o0 + v * L);
  const typename P::T* xrow = x + (n * H + h) * W * cin;
  for (int64_t t = 0; t < k; ++t) {
    const typename P::WT* wt = w + P::widx(t * cin, cout, o0);
    if (vertical) {
      const int64_t hs = h + t * d - p;
      if (hs < 0 || hs >= H) continue;
      tile_dot<P, NB, NV, CIN>(acc, x + ((n * H + hs) * W + w0) * cin, cin, wt, cout, cin);
      continue;
    }
    const int64_t off = t * d - p;
    if (w0 + off >= 0 && w0 + NB - 1 + off < W) {
      tile_dot<P, NB, NV, CIN>(acc, xrow + (w0 + off) * cin, cin, wt, cout, cin);
      continue;
    }
#pragma GCC unroll 16
    for (int j = 0; j < NB; ++j) {  // A tile reaching into the padding: pixel by pixel.
      const int64_t ws = w0 + j + off;
      if (ws < 0 || ws >= W) continue;
      pixel_dot<P, NV, CIN>(acc[j], xrow + ws * cin, wt, cout, cin);
    }
  }
  typename P::T* yrow = y + (n * H + h) * W * cout;
  const typename P::T* rrow = res ? res + (n * H + h) * W * cout : nullptr;
#pragma GCC unroll 16
  for (int j = 0; j < NB; ++j)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const int64_t at = (w0 + j) * cout + o0 + v * L;
      vf r = acc[j][v];
      if (rrow) r += load_act(rrow + at);
      if (use_relu) r = relu(r);
      store_act(yrow + at, r);
    }
}

// Calls tile(NB, NV, CIN, w0, o0) (three std::integral_constants, then the first pixel
// and output channel) over register tiles covering W pixels by cout channels (a multiple
// of 16) of one output row: the widest tile the ISA holds, narrower ones for the rest of
// cout, the last W % NB pixels one at a time. CIN is 16 for 16 input channels (ESNet's
// narrow convolutions get their channel loop unrolled), else 0 (any).
template <class Tile>
static inline void for_each_tile(int64_t W, int64_t cin, int64_t cout, const Tile& tile) {
  using std::integral_constant;
  auto span = [&](auto nb, auto nv, int64_t o_begin, int64_t o_end) {
    constexpr int NB = decltype(nb)::value, NV = decltype(nv)::value;
    auto run = [&](auto cin_tag) {
      for (int64_t o0 = o_begin; o0 < o_end; o0 += NV * L) {
        int64_t w0 = 0;
        for (; w0 + NB <= W; w0 += NB) tile(nb, nv, cin_tag, w0, o0);
        for (; w0 < W; ++w0) tile(integral_constant<int, 1>{}, nv, cin_tag, w0, o0);
      }
    };
    if (cin == 16)
      run(integral_constant<int, 16>{});
    else
      run(integral_constant<int, 0>{});
  };
  constexpr int64_t wide = kConvVectors * L, mid = kConvMidVectors * L;
  int64_t o = 0;
  if (cout >= wide) {
    o = cout / wide * wide;
    span(integral_constant<int, kConvPixels>{}, integral_constant<int, kConvVectors>{}, 0, o);
  }
  if (mid != wide && cout - o >= mid) {
    const int64_t end = o + (cout - o) / mid * mid;
    span(integral_constant<int, kConvMidPixels>{}, integral_constant<int, kConvMidVectors>{}, o,
         end);
    o = end;
  }
  if (o < cout)
    span(integral_constant<int, kConvNarrowPixels>{},
         integral_constant<int, kConvNarrowVectors>{}, o, cout);
}

// Output row (n, h) of the factorised convolution (kx1 if `vertical`, else 1xk; 'same'
// padding, dilation d): x (N, H, W, cin), w (k, cin, cout), b (cout), res (N, H, W, cout)
// or null, y (N, H, W, cout); cout a multiple of 16. w is laid out by pack_weights<P>
// (so cin is even for BF16Dot).
template <class P = F32Dot>
static inline void conv_kx1_row(const typename P::T* x, const typename P::WT* w, const float* b,
                                const typename P::T* res, typename P::T* y, int64_t n,
                                int64_t h, int64_t H, int64_t W, int64_t cin, int64_t cout,
                                int64_t k, int64_t d, bool vertical, bool use_relu) {
  for_each_tile(W, cin, cout, [&](auto nb, auto nv, auto ci, int64_t w0, int64_t o0) {
    conv_kx1_tile<P, decltype(nb)::value, decltype(nv)::value, decltype(ci)::value>(
        x, w, b, res, y, n, h, H, W, cin, cout, k, d, vertical, use_relu, w0, o0);
  });
}

// Pixels [w0, w0 + NB) and channels [o0, o0 + NV * L) of output row (n, h) of a KY x KX
// convolution with strides (sy, sx), no dilation: tap (ty, tx) of output pixel (h, w)
// reads input pixel (h * sy + ty + oy, w * sx + tx + ox) (oy, ox: minus the leading
// padding; pixels outside x read zeros); y = b + sum over taps of x(tap) @ w[tap].
// Output pixel w's channels start at yrow + w * ypix (ypix = cout for a plain row; 2 *
// cout writes every other pixel, as a transposed convolution's phases interleave).
template <class P, int NB, int NV, int CIN>
static inline void conv2d_tile(const typename P::T* x, const typename P::WT* w, const float* b,
                               typename P::T* yrow, int64_t ypix, int64_t n, int64_t h,
                               int64_t HI, int64_t WI, int64_t cin, int64_t cout, int64_t KY,
                               int64_t KX, int64_t sy, int64_t sx, int64_t oy, int64_t ox,
                               int64_t w0, int64_t o0) {
  if (CIN) cin = CIN;
  vf acc[NB][NV];
#pragma GCC unroll 16
  for (int j = 0; j < NB; ++j)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[j][v] = load(b + o0 + v * L);
  for (int64_t ty = 0; ty < KY; ++ty) {
    const int64_t hs = h * sy + ty + oy;
    if (hs < 0 || hs >= HI) continue;
    const typename P::T* xrow = x + (n * HI + hs) * WI * cin;
    for (int64_t tx = 0; tx < KX; ++tx) {
      const typename P::WT* wt = w + P::widx((ty * KX + tx) * cin, cout, o0);
      const int64_t first = w0 * sx + tx + ox, last = (w0 + NB - 1) * sx + tx + ox;
      if (first >= 0 && last < WI) {
        tile_dot<P, NB, NV, CIN>(acc, xrow + first * cin, sx * cin, wt, cout, cin);
        continue;
      }
#pragma GCC unroll 16
      for (int j = 0; j < NB; ++j) {  // A tile reaching into the padding: pixel by pixel.
        const int64_t ws = first + j * sx;
        if (ws < 0 || ws >= WI) continue;
        pixel_dot<P, NV, CIN>(acc[j], xrow + ws * cin, wt, cout, cin);
      }
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < NB; ++j)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) store_act(yrow + (w0 + j) * ypix + o0 + v * L, acc[j][v]);
}

// Output row (n, h) of conv2d_tile's convolution, Wo pixels written from yrow on, ypix
// elements apart: x (N, HI, WI, cin), w (KY * KX, cin, cout) laid out by
// pack_weights<P>, b (cout); cout a multiple of 16.
template <class P = F32Dot>
static inline void conv2d_row(const typename P::T* x, const typename P::WT* w, const float* b,
                              typename P::T* yrow, int64_t ypix, int64_t n, int64_t h,
                              int64_t HI, int64_t WI, int64_t Wo, int64_t cin, int64_t cout,
                              int64_t KY, int64_t KX, int64_t sy, int64_t sx, int64_t oy,
                              int64_t ox) {
  for_each_tile(Wo, cin, cout, [&](auto nb, auto nv, auto ci, int64_t w0, int64_t o0) {
    conv2d_tile<P, decltype(nb)::value, decltype(nv)::value, decltype(ci)::value>(
        x, w, b, yrow, ypix, n, h, HI, WI, cin, cout, KY, KX, sy, sx, oy, ox, w0, o0);
  });
}

// --- Winograd F(m, k) for the factorised convolution with k = 3 or 5 taps ------------------
// m outputs y(q), y(q + d), ..., y(q + (m - 1) d) of a k-tap (dilated) 1-D correlation
// from n = m + k - 1 inputs d_s = x(q + (s - (k - 1) / 2) d): y = AT [(G g) * (BT d)], so
// per group of m output pixels n matrix products (cin x cout) instead of m k: F(4, 3)
// (2x fewer FMAs) and F(2, 5) (1.67x; F(4, 5) would need the points +-1/2, whose
// rounding errors grow past float32's comfort). The products are the same
// register-blocked tiles as the direct convolution. Matrices for the points 0, +-1,
// +-2 and infinity (Lavin & Gray 2016), checked against the direct sums by selftest.cc.
template <int K>
struct Winograd;
template <>
struct Winograd<3> {
  static constexpr int M = 4, N = 6;
  static constexpr float AT[4][6] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
  static constexpr float G[6][3] = {{.25f, 0, 0},
                                    {-1.f / 6, -1.f / 6, -1.f / 6},
                                    {-1.f / 6, 1.f / 6, -1.f / 6},
                                    {1.f / 24, 1.f / 12, 1.f / 6},
                                    {1.f / 24, -1.f / 12, 1.f / 6},
                                    {0, 0, 1}};
  static constexpr float BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0},
                                     {0, 4, -4, -1, 1, 0}, {0, -2, -1, 2, 1, 0},
                                     {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
};
template <>
struct Winograd<5> {
  static constexpr int M = 2, N = 6;
  static constexpr float AT[2][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 1}};
  static constexpr float G[6][5] = {
      {.25f, 0, 0, 0, 0},
      {-1.f / 6, -1.f / 6, -1.f / 6, -1.f / 6, -1.f / 6},
      {-1.f / 6, 1.f / 6, -1.f / 6, 1.f / 6, -1.f / 6},
      {1.f / 24, 1.f / 12, 1.f / 6, 1.f / 3, 2.f / 3},
      {1.f / 24, -1.f / 12, 1.f / 6, -1.f / 3, 2.f / 3},
      {0, 0, 0, 0, 1}};
  static constexpr float BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0},
                                     {0, 4, -4, -1, 1, 0}, {0, -2, -1, 2, 1, 0},
                                     {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
};
constexpr int kWinogradInputs = 6;  // n of both: the transformed weights are (6, cin, cout)

// Whether conv_kx1 with these taps and channels goes through Winograd (wide enough that
// the transforms cost little next to the products; input channels whole vectors).
static inline bool winograd_applies(int64_t k, int64_t cin, int64_t cout) {
  return (k == 3 || k == 5) && cin >= 32 && cin % 16 == 0 && cout >= 32 && cout % 16 == 0;
}

// wt (kWinogradInputs, cin, cout) = G w for w (k, cin, cout).
static inline void winograd_weights(int64_t k, const float* w, float* wt, int64_t cin,
                                    int64_t cout) {
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const int64_t size = cin * cout;
    for (int i = 0; i < T::N; ++i)
      for (int64_t e = 0; e < size; ++e) {
        float sum = 0.f;
        for (int t = 0; t < k; ++t) sum += T::G[i][t] * w[t * size + e];
        wt[i * size + e] = sum;
      }
  };
  if (k == 3) run(Winograd<3>{}); else run(Winograd<5>{});
}

// Groups per line: positions q of [0, n) with q mod (m d) < d (their outputs q + o d).
static inline int64_t winograd_groups(int64_t n, int64_t d, int64_t m) {
  return n / (m * d) * d + std::min(n % (m * d), d);
}
static inline int64_t winograd_group(int64_t j, int64_t d, int64_t m) {
  return j / d * m * d + j % d;
}
static inline int64_t winograd_outputs(int64_t k) { return k == 3 ? 4 : 2; }

// Tasks of a conv_kx1 through Winograd: one per image row (horizontal), or one per group
// of output rows (h, h + d, ...) (vertical).
static inline int64_t winograd_tasks(int64_t N, int64_t H, int64_t k, int64_t d,
                                     bool vertical) {
  return N * (vertical ? winograd_groups(H, d, winograd_outputs(k)) : H);
}

template <class P, int K, int NB, int NV>
static inline void winograd_tile(const typename P::T* U, int64_t upair, int64_t ustride,
                                 const typename P::WT* wt, const float* b,
                                 const typename P::T* res, typename P::T* y,
                                 int64_t cin, int64_t cout, bool use_relu, int64_t o0,
                                 const int64_t (*out)[NB]) {
  using T = Winograd<K>;
  vf yo[T::M][NB][NV];
#pragma GCC unroll 16
  for (int m = 0; m < T::M; ++m)
#pragma GCC unroll 16
    for (int j = 0; j < NB; ++j)
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) yo[m][j][v] = load(b + o0 + v * L);
  for (int i = 0; i < T::N; ++i) {
    vf acc[NB][NV];
#pragma GCC unroll 16
    for (int j = 0; j < NB; ++j)
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[j][v] = vf{};
    tile_dot<P, NB, NV>(acc, U + i * ustride, upair, wt + P::widx(i * cin, cout, o0), cout,
                        cin);
#pragma GCC unroll 16
    for (int m = 0; m < T::M; ++m)
#pragma GCC unroll 16
      for (int j = 0; j < NB; ++j)
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v)
          if (T::AT[m][i] != 0) yo[m][j][v] = T::AT[m][i] * acc[j][v] + yo[m][j][v];
  }
  for (int m = 0; m < T::M; ++m)
#pragma GCC unroll 16
    for (int j = 0; j < NB; ++j) {
      const int64_t at = out[m][j];
      if (at < 0) continue;
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) {
        vf r = yo[m][j][v];
        if (res) r += load_act(res + at + o0 + v * L);
        if (use_relu) r = relu(r);
        store_act(y + at + o0 + v * L, r);
      }
    }
}

// Task t of winograd_tasks: x (N, H, W, cin), wt = winograd_weights, b, res (or null),
// y (N, H, W, cout); `scratch` holds kWinogradInputs * kWinogradChunk * cin elements
// (the transformed inputs, stored as P's activations).
constexpr int64_t kWinogradChunk = 48;  // pairs whose transformed inputs stay in L2
template <class P, int K>
static void winograd_task_k(int64_t task, const typename P::T* x, const typename P::WT* wt,
                            const float* b, const typename P::T* res, typename P::T* y,
                            int64_t H, int64_t W, int64_t cin, int64_t cout, int64_t d,
                            bool vertical, bool use_relu, typename P::T* scratch) {
  using A = typename P::T;
  using T = Winograd<K>;
  constexpr int N = T::N, M = T::M;
  constexpr int64_t half = (K - 1) / 2;
  int64_t n, h, npairs;
  if (vertical) {
    const int64_t per_image = winograd_groups(H, d, M);
    n = task / per_image, h = winograd_group(task % per_image, d, M), npairs = W;
  } else {
    n = task / H, h = task % H, npairs = winograd_groups(W, d, M);
  }
  const A* ximg = x + n * H * W * cin;
  const int64_t yimg = n * H * W * cout;
  // Input s of pair j, or null (zero padding); the outputs' offsets in y, or -1.
  auto input = [&](int64_t j, int s) -> const A* {
    if (vertical) {
      const int64_t hs = h + (s - half) * d;
      return hs < 0 || hs >= H ? nullptr : ximg + (hs * W + j) * cin;
    }
    const int64_t ws = winograd_group(j, d, M) + (s - half) * d;
    return ws < 0 || ws >= W ? nullptr : ximg + (h * W + ws) * cin;
  };
  auto output = [&](int64_t j, int which) -> int64_t {
    if (vertical) {
      const int64_t ho = h + which * d;
      return ho < H ? yimg + (ho * W + j) * cout : -1;
    }
    const int64_t wo = winograd_group(j, d, M) + which * d;
    return wo < W ? yimg + (h * W + wo) * cout : -1;
  };
  const int64_t ustride = kWinogradChunk * cin;
  for (int64_t j0 = 0; j0 < npairs; j0 += kWinogradChunk) {
    const int64_t count = std::min(kWinogradChunk, npairs - j0);
    for (int64_t j = 0; j < count; ++j) {  // U[i][j] = sum_s BT[i][s] d_s
      const A* src[N];
      for (int s = 0; s < N; ++s) src[s] = input(j0 + j, s);
      for (int64_t c = 0; c < cin; c += L) {
        vf dv[N];
        for (int s = 0; s < N; ++s) dv[s] = src[s] ? load_act(src[s] + c) : vf{};
#pragma GCC unroll 8
        for (int i = 0; i < N; ++i) {
          vf u = vf{};
#pragma GCC unroll 8
          for (int s = 0; s < N; ++s)
            if (T::BT[i][s] != 0) u = T::BT[i][s] * dv[s] + u;
          store_act(scratch + i * ustride + j * cin + c, u);
        }
      }
    }
    auto run = [&](auto nb_tag, auto nv_tag, int64_t o_begin, int64_t o_end) {
      constexpr int NB = decltype(nb_tag)::value, NV = decltype(nv_tag)::value;
      int64_t out[M][NB];
      for (int64_t o0 = o_begin; o0 < o_end; o0 += NV * L) {
        int64_t j = 0;
        for (; j + NB <= count; j += NB) {
          for (int m = 0; m < M; ++m)
            for (int q = 0; q < NB; ++q) out[m][q] = output(j0 + j + q, m);
          winograd_tile<P, K, NB, NV>(scratch + j * cin, cin, ustride, wt, b, res, y, cin, cout,
                                   use_relu, o0, out);
        }
        for (; j < count; ++j) {
          int64_t one[M][1];
          for (int m = 0; m < M; ++m) one[m][0] = output(j0 + j, m);
          winograd_tile<P, K, 1, NV>(scratch + j * cin, cin, ustride, wt, b, res, y, cin, cout,
                                  use_relu, o0, one);
        }
      }
    };
    constexpr int64_t wide = kConvVectors * L;
    const int64_t o = cout / wide * wide;
    run(std::integral_constant<int, kConvPixels>{}, std::integral_constant<int, kConvVectors>{},
        0, o);
    if (o < cout)
      run(std::integral_constant<int, kConvNarrowPixels>{},
          std::integral_constant<int, kConvNarrowVectors>{}, o, cout);
  }
}

template <class P = F32Dot>
static inline void winograd_task(int64_t task, int64_t k, const typename P::T* x,
                                 const typename P::WT* wt, const float* b,
                                 const typename P::T* res, typename P::T* y, int64_t H,
                                 int64_t W, int64_t cin, int64_t cout, int64_t d, bool vertical,
                                 bool use_relu, typename P::T* scratch) {
  if (k == 3)
    winograd_task_k<P, 3>(task, x, wt, b, res, y, H, W, cin, cout, d, vertical, use_relu,
                          scratch);
  else
    winograd_task_k<P, 5>(task, x, wt, b, res, y, H, W, cin, cout, d, vertical, use_relu,
                          scratch);
}

// Stores pixel j's first `out` channels of acc at dst + 2 * j * out (every other output
// pixel: the transposed convolution interleaves its two column phases).
template <int NB, int NV>
static inline __attribute__((always_inline)) void upsample16_store(const vf (&acc)[NB][NV],
                                                                   float* dst, int64_t out) {
#pragma GCC unroll 16
  for (int j = 0; j < NB; ++j)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      float* at = dst + 2 * j * out + v * L;
      if ((v + 1) * L <= out) {
        store(at, acc[j][v]);
      } else if (v * L < out) {
        float tmp[L];
        store(tmp, acc[j][v]);
        std::memcpy(at, tmp, (out - v * L) * sizeof(float));
      }
    }
}

// The decoder's output layer, PyTorch ConvTranspose2d(16, out, 2, stride=2) on row m of x
// (N, H, W, 16): output pixel (2m+a, 2n+b) = bias + x[m, n] @ w[a, b]. `wpad` and `bpad`
// are w (2, 2, 16, out) and b (out) with `out` padded to OP (16 or 32) with zeros, see
// upsample16_pad; y is (N, 2H, 2W, out).
template <int OP>
static void upsample16_row(const float* x, const float* wpad, const float* bpad, float* y,
                           int64_t n, int64_t m, int64_t H, int64_t W, int64_t out) {
  constexpr int NV = OP / L;
  constexpr int NB = kAccumulators / NV;
  const float* xrow = x + (n * H + m) * W * 16;
  for (int a = 0; a < 2; ++a) {
    float* yrow = y + (n * 2 * H + 2 * m + a) * 2 * W * out;
    for (int bb = 0; bb < 2; ++bb) {
      const float* wab = wpad + (a * 2 + bb) * 16 * OP;
      int64_t px = 0;
      for (; px + NB <= W; px += NB) {
        vf acc[NB][NV];
#pragma GCC unroll 16
        for (int j = 0; j < NB; ++j)
#pragma GCC unroll 16
          for (int v = 0; v < NV; ++v) acc[j][v] = load(bpad + v * L);
        tile_fma<NB, NV, 16>(acc, xrow + px * 16, 16, wab, OP, 16);
        upsample16_store<NB, NV>(acc, yrow + (2 * px + bb) * out, out);
      }
      for (; px < W; ++px) {
        vf acc[1][NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) acc[0][v] = load(bpad + v * L);
        tile_fma<1, NV, 16>(acc, xrow + px * 16, 16, wab, OP, 16);
        upsample16_store<1, NV>(acc, yrow + (2 * px + bb) * out, out);
      }
    }
  }
}

// wpad (2, 2, 16, OP) and bpad (OP): w (2, 2, 16, out) and b (out) padded with zeros;
// OP = 16 if out <= 16, else 32 (out <= 32). Returns OP.
static inline int upsample16_pad(const float* w, const float* b, int64_t out, float* wpad,
                                 float* bpad) {
  const int OP = out <= 16 ? 16 : 32;
  std::fill(wpad, wpad + 4 * 16 * OP, 0.f);
  std::fill(bpad, bpad + OP, 0.f);
  for (int64_t r = 0; r < 4 * 16; ++r) std::copy(w + r * out, w + (r + 1) * out, wpad + r * OP);
  std::copy(b, b + out, bpad);
  return OP;
}

static inline void upsample16_row(const float* x, const float* wpad, const float* bpad, float* y,
                                  int64_t n, int64_t m, int64_t H, int64_t W, int64_t out) {
  if (out <= 16)
    upsample16_row<16>(x, wpad, bpad, y, n, m, H, W, out);
  else
    upsample16_row<32>(x, wpad, bpad, y, n, m, H, W, out);
}

// dw[c][o] += sum_i src[i * sstride + c] * g[i * gstride + o] for CI input channels c and
// NV * L output channels o: the tile accumulates in registers over `count` steps i. With
// P's products: a step is one pixel (F32Dot, BF16Load) or a pair of pixels (BF16Dot, on
// pair_pixels' layout: element offsets scale by P::kStep).
template <class P, int CI, int NV>
static void wgrad_tile(const typename P::T* src, int64_t sstride, const typename P::WT* g,
                       int64_t gstride, int64_t count, float* dw, int64_t cout) {
  vf acc[CI][NV];
#pragma GCC unroll 16
  for (int c = 0; c < CI; ++c)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[c][v] = load(dw + c * cout + v * L);
  for (int64_t i = 0; i < count; ++i) {
    typename P::WV gv[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) gv[v] = P::wload(g + i * gstride + P::kStep * v * L);
    const typename P::T* s = src + i * sstride;
#pragma GCC unroll 16
    for (int c = 0; c < CI; ++c) {
      const typename P::SV sv = P::bcast(s + P::kStep * c);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[c][v] = P::madd(acc[c][v], sv, gv[v]);
    }
  }
#pragma GCC unroll 16
  for (int c = 0; c < CI; ++c)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) store(dw + c * cout + v * L, acc[c][v]);
}

// wgrad_tile for the last `left` < CI input channels, with a tile of exactly that many.
template <class P, int CI, int NV>
static void wgrad_tail(int64_t left, const typename P::T* src, int64_t sstride,
                       const typename P::WT* g, int64_t gstride, int64_t count, float* dw,
                       int64_t cout) {
  if constexpr (CI > 1) {
    if (left == CI - 1)
      return wgrad_tile<P, CI - 1, NV>(src, sstride, g, gstride, count, dw, cout);
    return wgrad_tail<P, CI - 1, NV>(left, src, sstride, g, gstride, count, dw, cout);
  }
}

template <class P, int CI, int NV>
static void wgrad_span_blocked(const typename P::T* src, int64_t sstride,
                               const typename P::WT* g, int64_t gstride, int64_t count,
                               float* dw, int64_t cin, int64_t cout, int64_t o_begin,
                               int64_t o_end) {
  constexpr int S = P::kStep;
  for (int64_t o = o_begin; o < o_end; o += NV * L) {
    int64_t c = 0;
    for (; c + CI <= cin; c += CI)
      wgrad_tile<P, CI, NV>(src + S * c, sstride, g + S * o, gstride, count, dw + c * cout + o,
                            cout);
    if (c < cin)
      wgrad_tail<P, CI, NV>(cin - c, src + S * c, sstride, g + S * o, gstride, count,
                            dw + c * cout + o, cout);
  }
}

// dw[c][o] += sum over count steps of src[c] * g[o], for every input channel c < cin
// (any number) and output channel o < cout (a multiple of 16).
template <class P>
static inline void wgrad_span(const typename P::T* src, int64_t sstride,
                              const typename P::WT* g, int64_t gstride, int64_t count,
                              float* dw, int64_t cin, int64_t cout) {
  constexpr int64_t wide = kWgradVectors * L;
  const int64_t o = cout / wide * wide;
  if (o)
    wgrad_span_blocked<P, kWgradInputs, kWgradVectors>(src, sstride, g, gstride, count, dw, cin,
                                                       cout, 0, o);
  if (o < cout)
    wgrad_span_blocked<P, kWgrad16Inputs, kWgrad16Vectors>(src, sstride, g, gstride, count, dw,
                                                           cin, cout, o, cout);
  static_assert(16 % (kWgrad16Vectors * L) == 0, "the narrow tile must divide 16 channels");
}

// db += the sum of output row dyrow's W pixels (cout channels, float32 or bfloat16).
template <class A>
static inline void wgrad_bias_row(const A* dyrow, float* db, int64_t W, int64_t cout) {
  for (int64_t o = 0; o < cout; o += L) {  // Four independent sums: no add latency chain.
    vf bacc[4] = {load(db + o), vf{}, vf{}, vf{}};
    int64_t w = 0;
    for (; w + 4 <= W; w += 4)
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) bacc[i] += load_act(dyrow + (w + i) * cout + o);
    for (; w < W; ++w) bacc[0] += load_act(dyrow + w * cout + o);
    store(db + o, (bacc[0] + bacc[1]) + (bacc[2] + bacc[3]));
  }
}

// Output pixels go in chunks of 128, whose input and gradient pixels stay in L1 or L2
// across the taps and the tiles of input channels.
constexpr int64_t kWgradChunk = 128;

// Output row (n, h)'s share of the kernel and bias gradients of a convolution (NHWC, a
// KY x KX kernel with strides (sy, sx), dilation (dil_y, dil_x), tap (0, 0) reading input
// pixel (h * sy + off_y, w * sx + off_x); any Cin, Cout a multiple of 16):
// dw[t] += x_t^T dy and db += sum(dy), x (N, HI, WI, cin), dy (N, H, W, cout), where x_t
// holds the input pixels tap t reads (zero padding contributes nothing). Outer products
// accumulate in registers: no transposes, unlike XLA's. x and dy are P's activations
// (F32Dot: float32; BF16Load: bfloat16 read into float32 FMAs); dw and db float32.
template <class P = F32Dot>
static inline void wgrad_row(const typename P::T* x, const typename P::T* dy, float* dw,
                             float* db, int64_t n, int64_t h, int64_t HI, int64_t WI,
                             int64_t H, int64_t W, int64_t cin, int64_t cout, int64_t KY,
                             int64_t KX, int64_t sy, int64_t sx, int64_t dil_y, int64_t dil_x,
                             int64_t off_y, int64_t off_x) {
  const typename P::T* dyrow = dy + (n * H + h) * W * cout;
  wgrad_bias_row(dyrow, db, W, cout);
  for (int64_t c0 = 0; c0 < W; c0 += kWgradChunk) {
    const int64_t c1 = std::min(W, c0 + kWgradChunk);
    for (int64_t ty = 0; ty < KY; ++ty) {
      const int64_t hs = h * sy + ty * dil_y + off_y;
      if (hs < 0 || hs >= HI) continue;
      const typename P::T* src = x + (n * HI + hs) * WI * cin;
      for (int64_t tx = 0; tx < KX; ++tx) {
        // Output pixel w reads input pixel w * sx + shift of row hs.
        const int64_t shift = tx * dil_x + off_x;
        const int64_t last = WI - 1 - shift;  // The last readable input pixel, minus shift.
        const int64_t w_begin = std::max(c0, shift >= 0 ? 0 : (-shift + sx - 1) / sx);
        const int64_t w_end = last < 0 ? 0 : std::min<int64_t>(c1, last / sx + 1);
        if (w_end <= w_begin) continue;
        wgrad_span<P>(src + (w_begin * sx + shift) * cin, sx * cin, dyrow + w_begin * cout,
                      cout, w_end - w_begin, dw + (ty * KX + tx) * cin * cout, cin, cout);
      }
    }
  }
}

#if defined(ESNET_BF16_DOT)
// out (ceil(count / 2), C, 2): pixel pairs interleaved channel by channel, each channel's
// two pixels one 32-bit word (what vdpbf16ps multiplies); pixel(i) is pixel i's C
// channels or null (zeros), and an odd count's last pair is padded with zeros.
template <class Pixel>
static inline void pair_pixels(const Pixel& pixel, int64_t count, int64_t C, bf16* out) {
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t i = 0; i < count; i += 2) {
    const bf16* a = pixel(i);
    const bf16* b = i + 1 < count ? pixel(i + 1) : nullptr;
    bf16* o = out + i * C;
    int64_t c = 0;
    for (; c + 16 <= C; c += 16) {
      const __m512i lo =
          a ? _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + c)))
            : zero;
      const __m512i hi =
          b ? _mm512_slli_epi32(_mm512_cvtepu16_epi32(
                                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + c))),
                                16)
            : zero;
      _mm512_storeu_si512(o + 2 * c, _mm512_or_si512(lo, hi));
    }
    for (; c < C; ++c) {
      o[2 * c] = a ? a[c] : bf16(0);
      o[2 * c + 1] = b ? b[c] : bf16(0);
    }
  }
}

// wgrad_row in bfloat16 with the bf16 dot products: the products pair adjacent output
// pixels, so each chunk's gradient pixels and, per tap, the input pixels they meet are
// first laid out in pairs (pair_pixels; out-of-range pixels as zeros) in `gpairs`
// (kWgradChunk * cout) and `xpairs` (kWgradChunk * cin); the sums stay float32.
static inline void wgrad_row_pairs(const bf16* x, const bf16* dy, float* dw, float* db,
                                   int64_t n, int64_t h, int64_t HI, int64_t WI, int64_t H,
                                   int64_t W, int64_t cin, int64_t cout, int64_t KY,
                                   int64_t KX, int64_t sy, int64_t sx, int64_t dil_y,
                                   int64_t dil_x, int64_t off_y, int64_t off_x, bf16* gpairs,
                                   bf16* xpairs) {
  const bf16* dyrow = dy + (n * H + h) * W * cout;
  wgrad_bias_row(dyrow, db, W, cout);
  for (int64_t c0 = 0; c0 < W; c0 += kWgradChunk) {
    const int64_t count = std::min(W - c0, kWgradChunk), pairs = (count + 1) / 2;
    pair_pixels([&](int64_t i) { return dyrow + (c0 + i) * cout; }, count, cout, gpairs);
    for (int64_t ty = 0; ty < KY; ++ty) {
      const int64_t hs = h * sy + ty * dil_y + off_y;
      if (hs < 0 || hs >= HI) continue;
      const bf16* src = x + (n * HI + hs) * WI * cin;
      for (int64_t tx = 0; tx < KX; ++tx) {
        const int64_t shift = tx * dil_x + off_x;
        if ((c0 + count - 1) * sx + shift < 0 || c0 * sx + shift >= WI) continue;
        pair_pixels(
            [&](int64_t i) -> const bf16* {
              const int64_t ws = (c0 + i) * sx + shift;
              return ws < 0 || ws >= WI ? nullptr : src + ws * cin;
            },
            count, cin, xpairs);
        wgrad_span<BF16Dot>(xpairs, 2 * cin, gpairs, 2 * cout, pairs,
                            dw + (ty * KX + tx) * cin * cout, cin, cout);
      }
    }
  }
}
#endif

// Per-channel sums for training-mode BatchNorm over pixels [begin, end) of NHWC rows of C
// (a multiple of 16) channels, added to s1 and s2: sum(a) and sum(a * a) (GRAD false, x
// and mean unused), or sum(a) and sum(a * (x - mean)) (GRAD true, a = dy). Pixels go in
// chunks that stay in L1 while each 16-channel group is summed.
template <bool GRAD, class A>
static void channel_sums_chunk(const A* a, const A* x, const float* mean,
                               int64_t begin, int64_t end, int64_t C, float* s1, float* s2) {
  constexpr int64_t CHUNK = 64;
  constexpr int NV = 16 / L;
  for (int64_t p0 = begin; p0 < end; p0 += CHUNK) {
    const int64_t p1 = std::min(end, p0 + CHUNK);
    for (int64_t c = 0; c < C; c += 16) {
      vf acc1[NV], acc2[NV], m[NV];
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) {
        acc1[v] = load(s1 + c + v * L);
        acc2[v] = load(s2 + c + v * L);
        m[v] = GRAD ? load(mean + c + v * L) : vf{};
      }
      for (int64_t p = p0; p < p1; ++p) {
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) {
          const vf u = load_act(a + p * C + c + v * L);
          acc1[v] += u;
          acc2[v] = u * (GRAD ? load_act(x + p * C + c + v * L) - m[v] : u) + acc2[v];
        }
      }
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) {
        store(s1 + c + v * L, acc1[v]);
        store(s2 + c + v * L, acc2[v]);
      }
    }
  }
}

}  // namespace esnet
