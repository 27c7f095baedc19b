// ESNet's CPU compute kernels: plain C++17 with GCC/Clang vector extensions, no XLA headers
// (kernels.cc binds them to XLA's FFI; selftest.cc checks them against scalar loops).
//
// One source for every instruction set. `vf` is the machine's native float vector (16
// lanes with AVX-512, 8 with AVX2/AVX, 4 with NEON or SSE), written with the compiler's
// vector extension, so `a * b + c` is one vfmadd / fmla (with -ffp-contract=fast), loads
// and stores are unaligned vector moves, and a broadcast is `s - vf{}`. The kernels are
// written in these vectors and in register blocks whose shape is a compile-time choice
// per ISA (the kBlock* constants below): an accumulator tile of NB pixels (or input
// channels) by NV vectors of output channels lives in registers for a whole reduction,
// and must leave room for the NV weight vectors and a broadcast:
//   NB * NV + NV + 1 <= registers (x86 without AVX-512: 16 ymm; AVX-512 and NEON: 32).
// A portable SIMD library (highway) would do the same with a dependency to install;
// intrinsics per ISA would triple the source. The compiler is trusted only with what it
// does reliably: fully unrolled loops over compile-time trip counts on local arrays of
// vectors (kept in registers), contraction of a*b+c, and unaligned vector moves.
//
// Layouts are NHWC float32. Channel counts: conv_kx1 Cout % 16 == 0 (any Cin),
// wgrad Cout % 16 == 0 (any Cin), channel sums C % 16 == 0, upsample16 Cin == 16 and
// Cout <= 32. 16 is a multiple of every ISA's lane count, so no kernel needs masks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace esnet {

#if defined(__AVX512F__)
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
// be reloaded for every pixel (11 loads per 12 FMAs), measured 5-10% slower on Zen 2.
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
template <int NB, int NV, int CIN = 0>
static inline __attribute__((always_inline)) void tile_fma(vf (&acc)[NB][NV], const float* src,
                                                           int64_t sstride, const float* w,
                                                           int64_t ldw, int64_t cin) {
  if (CIN) cin = CIN;
  for (int64_t c = 0; c < cin; ++c) {
    vf wv[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) wv[v] = load(w + c * ldw + v * L);
#pragma GCC unroll 16
    for (int j = 0; j < NB; ++j) {
      const vf s = splat(src[j * sstride + c]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[j][v] = s * wv[v] + acc[j][v];
    }
  }
}

// tile_fma for one pixel: acc[v] += sum_c src[c] * w[c * ldw + v * L].
template <int NV, int CIN = 0>
static inline __attribute__((always_inline)) void pixel_fma(vf (&acc)[NV], const float* src,
                                                            const float* w, int64_t ldw,
                                                            int64_t cin) {
  if (CIN) cin = CIN;
  for (int64_t c = 0; c < cin; ++c) {
    const vf s = splat(src[c]);
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] = s * load(w + c * ldw + v * L) + acc[v];
  }
}

// Pixels [w0, w0 + NB) and channels [o0, o0 + NV * L) of output row (n, h) of the
// factorised convolution: y = relu?(b + sum_t x(tap t) @ w[t] (+ res)), 'same' padding.
template <int NB, int NV, int CIN>
static inline void conv_kx1_tile(const float* x, const float* w, const float* b,
                                 const float* res, float* y, int64_t n, int64_t h, int64_t H,
                                 int64_t W, int64_t cin, int64_t cout, int64_t k, int64_t d,
                                 bool vertical, bool use_relu, int64_t w0, int64_t o0) {
  if (CIN) cin = CIN;
  const int64_t p = (k - 1) / 2 * d;
  vf acc[NB][NV];
#pragma GCC unroll 16
  for (int j = 0; j < NB; ++j)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[j][v] = load(b + o0 + v * L);
  const float* xrow = x + (n * H + h) * W * cin;
  for (int64_t t = 0; t < k; ++t) {
    const float* wt = w + t * cin * cout + o0;
    if (vertical) {
      const int64_t hs = h + t * d - p;
      if (hs < 0 || hs >= H) continue;
      tile_fma<NB, NV, CIN>(acc, x + ((n * H + hs) * W + w0) * cin, cin, wt, cout, cin);
      continue;
    }
    const int64_t off = t * d - p;
    if (w0 + off >= 0 && w0 + NB - 1 + off < W) {
      tile_fma<NB, NV, CIN>(acc, xrow + (w0 + off) * cin, cin, wt, cout, cin);
      continue;
    }
#pragma GCC unroll 16
    for (int j = 0; j < NB; ++j) {  // A tile reaching into the padding: pixel by pixel.
      const int64_t ws = w0 + j + off;
      if (ws < 0 || ws >= W) continue;
      pixel_fma<NV, CIN>(acc[j], xrow + ws * cin, wt, cout, cin);
    }
  }
  float* yrow = y + (n * H + h) * W * cout;
  const float* rrow = res ? res + (n * H + h) * W * cout : nullptr;
#pragma GCC unroll 16
  for (int j = 0; j < NB; ++j)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const int64_t at = (w0 + j) * cout + o0 + v * L;
      vf r = acc[j][v];
      if (rrow) r += load(rrow + at);
      if (use_relu) r = relu(r);
      store(yrow + at, r);
    }
}

template <int NB, int NV, int CIN>
static void conv_kx1_span_cin(const float* x, const float* w, const float* b, const float* res,
                              float* y, int64_t n, int64_t h, int64_t H, int64_t W, int64_t cin,
                              int64_t cout, int64_t k, int64_t d, bool vertical, bool use_relu,
                              int64_t o_begin, int64_t o_end) {
  for (int64_t o0 = o_begin; o0 < o_end; o0 += NV * L) {
    int64_t w0 = 0;
    for (; w0 + NB <= W; w0 += NB)
      conv_kx1_tile<NB, NV, CIN>(x, w, b, res, y, n, h, H, W, cin, cout, k, d, vertical,
                                 use_relu, w0, o0);
    for (; w0 < W; ++w0)  // The last W % NB pixels one at a time.
      conv_kx1_tile<1, NV, CIN>(x, w, b, res, y, n, h, H, W, cin, cout, k, d, vertical,
                                use_relu, w0, o0);
  }
}

// ESNet's 16-channel convolutions get a version with the channel loop unrolled.
template <int NB, int NV>
static void conv_kx1_span(const float* x, const float* w, const float* b, const float* res,
                          float* y, int64_t n, int64_t h, int64_t H, int64_t W, int64_t cin,
                          int64_t cout, int64_t k, int64_t d, bool vertical, bool use_relu,
                          int64_t o_begin, int64_t o_end) {
  if (cin == 16)
    conv_kx1_span_cin<NB, NV, 16>(x, w, b, res, y, n, h, H, W, cin, cout, k, d, vertical,
                                  use_relu, o_begin, o_end);
  else
    conv_kx1_span_cin<NB, NV, 0>(x, w, b, res, y, n, h, H, W, cin, cout, k, d, vertical,
                                 use_relu, o_begin, o_end);
}

// Output row (n, h) of the factorised convolution (kx1 if `vertical`, else 1xk; 'same'
// padding, dilation d): x (N, H, W, cin), w (k, cin, cout), b (cout), res (N, H, W, cout)
// or null, y (N, H, W, cout); cout a multiple of 16.
static inline void conv_kx1_row(const float* x, const float* w, const float* b,
                                const float* res, float* y, int64_t n, int64_t h, int64_t H,
                                int64_t W, int64_t cin, int64_t cout, int64_t k, int64_t d,
                                bool vertical, bool use_relu) {
  constexpr int64_t wide = kConvVectors * L, mid = kConvMidVectors * L;
  int64_t o = 0;
  if (cout >= wide) {
    o = cout / wide * wide;
    conv_kx1_span<kConvPixels, kConvVectors>(x, w, b, res, y, n, h, H, W, cin, cout, k, d,
                                             vertical, use_relu, 0, o);
  }
  if (mid != wide && cout - o >= mid) {
    const int64_t end = o + (cout - o) / mid * mid;
    conv_kx1_span<kConvMidPixels, kConvMidVectors>(x, w, b, res, y, n, h, H, W, cin, cout, k,
                                                   d, vertical, use_relu, o, end);
    o = end;
  }
  if (o < cout)
    conv_kx1_span<kConvNarrowPixels, kConvNarrowVectors>(x, w, b, res, y, n, h, H, W, cin,
                                                         cout, k, d, vertical, use_relu, o,
                                                         cout);
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
// NV * L output channels o: the tile accumulates in registers over `count` pixels.
template <int CI, int NV>
static void wgrad_tile(const float* src, int64_t sstride, const float* g, int64_t gstride,
                       int64_t count, float* dw, int64_t cout) {
  vf acc[CI][NV];
#pragma GCC unroll 16
  for (int c = 0; c < CI; ++c)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[c][v] = load(dw + c * cout + v * L);
  for (int64_t i = 0; i < count; ++i) {
    vf gv[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) gv[v] = load(g + i * gstride + v * L);
    const float* s = src + i * sstride;
#pragma GCC unroll 16
    for (int c = 0; c < CI; ++c) {
      const vf sv = splat(s[c]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[c][v] = sv * gv[v] + acc[c][v];
    }
  }
#pragma GCC unroll 16
  for (int c = 0; c < CI; ++c)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) store(dw + c * cout + v * L, acc[c][v]);
}

// wgrad_tile for the last `left` < CI input channels, with a tile of exactly that many.
template <int CI, int NV>
static void wgrad_tail(int64_t left, const float* src, int64_t sstride, const float* g,
                       int64_t gstride, int64_t count, float* dw, int64_t cout) {
  if constexpr (CI > 1) {
    if (left == CI - 1) return wgrad_tile<CI - 1, NV>(src, sstride, g, gstride, count, dw, cout);
    return wgrad_tail<CI - 1, NV>(left, src, sstride, g, gstride, count, dw, cout);
  }
}

template <int CI, int NV>
static void wgrad_span_blocked(const float* src, int64_t sstride, const float* g,
                               int64_t gstride, int64_t count, float* dw, int64_t cin,
                               int64_t cout, int64_t o_begin, int64_t o_end) {
  for (int64_t o = o_begin; o < o_end; o += NV * L) {
    int64_t c = 0;
    for (; c + CI <= cin; c += CI)
      wgrad_tile<CI, NV>(src + c, sstride, g + o, gstride, count, dw + c * cout + o, cout);
    if (c < cin)
      wgrad_tail<CI, NV>(cin - c, src + c, sstride, g + o, gstride, count, dw + c * cout + o,
                         cout);
  }
}

// dw[c][o] += sum over count pixels of src[c] * g[o], for every input channel c < cin
// (any number) and output channel o < cout (a multiple of 16).
static inline void wgrad_span(const float* src, int64_t sstride, const float* g,
                              int64_t gstride, int64_t count, float* dw, int64_t cin,
                              int64_t cout) {
  constexpr int64_t wide = kWgradVectors * L;
  const int64_t o = cout / wide * wide;
  if (o)
    wgrad_span_blocked<kWgradInputs, kWgradVectors>(src, sstride, g, gstride, count, dw, cin,
                                                    cout, 0, o);
  if (o < cout)
    wgrad_span_blocked<kWgrad16Inputs, kWgrad16Vectors>(src, sstride, g, gstride, count, dw,
                                                        cin, cout, o, cout);
  static_assert(16 % (kWgrad16Vectors * L) == 0, "the narrow tile must divide 16 channels");
}

// Output row (n, h)'s share of the kernel and bias gradients of a convolution (NHWC, a
// KY x KX kernel with strides (sy, sx), dilation (dil_y, dil_x), tap (0, 0) reading input
// pixel (h * sy + off_y, w * sx + off_x); any Cin, Cout a multiple of 16):
// dw[t] += x_t^T dy and db += sum(dy), x (N, HI, WI, cin), dy (N, H, W, cout), where x_t
// holds the input pixels tap t reads (zero padding contributes nothing). Outer products
// accumulate in registers: no transposes, unlike XLA's.
static inline void wgrad_row(const float* x, const float* dy, float* dw, float* db, int64_t n,
                             int64_t h, int64_t HI, int64_t WI, int64_t H, int64_t W,
                             int64_t cin, int64_t cout, int64_t KY, int64_t KX, int64_t sy,
                             int64_t sx, int64_t dil_y, int64_t dil_x, int64_t off_y,
                             int64_t off_x) {
  const float* dyrow = dy + (n * H + h) * W * cout;
  for (int64_t o = 0; o < cout; o += L) {  // Four independent sums: no add latency chain.
    vf bacc[4] = {load(db + o), vf{}, vf{}, vf{}};
    int64_t w = 0;
    for (; w + 4 <= W; w += 4)
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) bacc[i] += load(dyrow + (w + i) * cout + o);
    for (; w < W; ++w) bacc[0] += load(dyrow + w * cout + o);
    store(db + o, (bacc[0] + bacc[1]) + (bacc[2] + bacc[3]));
  }
  // Output pixels in chunks of 128, whose input and gradient pixels stay in L1 or L2
  // across the taps and the tiles of input channels.
  constexpr int64_t chunk = 128;
  for (int64_t c0 = 0; c0 < W; c0 += chunk) {
    const int64_t c1 = std::min(W, c0 + chunk);
    for (int64_t ty = 0; ty < KY; ++ty) {
      const int64_t hs = h * sy + ty * dil_y + off_y;
      if (hs < 0 || hs >= HI) continue;
      const float* src = x + (n * HI + hs) * WI * cin;
      for (int64_t tx = 0; tx < KX; ++tx) {
        // Output pixel w reads input pixel w * sx + shift of row hs.
        const int64_t shift = tx * dil_x + off_x;
        const int64_t last = WI - 1 - shift;  // The last readable input pixel, minus shift.
        const int64_t w_begin = std::max(c0, shift >= 0 ? 0 : (-shift + sx - 1) / sx);
        const int64_t w_end = last < 0 ? 0 : std::min<int64_t>(c1, last / sx + 1);
        if (w_end <= w_begin) continue;
        wgrad_span(src + (w_begin * sx + shift) * cin, sx * cin, dyrow + w_begin * cout, cout,
                   w_end - w_begin, dw + (ty * KX + tx) * cin * cout, cin, cout);
      }
    }
  }
}

// Per-channel sums for training-mode BatchNorm over pixels [begin, end) of NHWC rows of C
// (a multiple of 16) channels, added to s1 and s2: sum(a) and sum(a * a) (GRAD false, x
// and mean unused), or sum(a) and sum(a * (x - mean)) (GRAD true, a = dy). Pixels go in
// chunks that stay in L1 while each 16-channel group is summed.
template <bool GRAD>
static void channel_sums_chunk(const float* a, const float* x, const float* mean,
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
          const vf u = load(a + p * C + c + v * L);
          acc1[v] += u;
          acc2[v] = u * (GRAD ? load(x + p * C + c + v * L) - m[v] : u) + acc2[v];
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
