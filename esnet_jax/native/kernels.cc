// ESNet's CPU kernels in AVX-512, called from JAX as XLA FFI custom calls
// (esnet_jax/native_kernels.py compiles, loads and wraps them): the factorised
// convolution (kx1 or 1xk, 'same' padding, dilation d; bias, residual and ReLU fused), the
// 2x2 stride-2 output transposed convolution, the weight gradient of any factorised
// convolution, and BatchNorm's per-channel sums. NHWC float32 throughout. XLA:CPU's own
// kernels are 2-3x slower on these; see the README.
#include <immintrin.h>
#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <thread>
#include <cstdint>
#include <vector>
#include "xla/ffi/api/ffi.h"
namespace ffi = xla::ffi;

// Output row (n, h) of the 16-channel factorised convolution: blocks of 8 pixels, one
// register each, all 16 output channels.
static inline void conv_row(const float* x, const float* w, const float* b, const float* res,
                            float* y, int64_t n, int64_t h, int64_t H, int64_t W, int64_t k,
                            int64_t d, bool vertical, bool relu) {
  const int64_t p = (k - 1) / 2 * d;
  const __m512 zero = _mm512_setzero_ps();
  const __m512 bias = _mm512_loadu_ps(b);
  float* yrow = y + ((n * H + h) * W) * 16;
  const float* rrow = res ? res + ((n * H + h) * W) * 16 : nullptr;
  constexpr int B = 8;
  for (int64_t w0 = 0; w0 < W; w0 += B) {
    const int64_t nb = (W - w0) < B ? (W - w0) : B;
    __m512 acc[B];
    for (int j = 0; j < B; ++j) acc[j] = bias;
    for (int64_t t = 0; t < k; ++t) {
      const float* wt = w + t * 256;
      if (vertical) {
        const int64_t hs = h + t * d - p;
        if (hs < 0 || hs >= H) continue;
        const float* src = x + ((n * H + hs) * W + w0) * 16;
        if (nb == B) {
          for (int c = 0; c < 16; ++c) {
            const __m512 wv = _mm512_loadu_ps(wt + c * 16);
            for (int j = 0; j < B; ++j)
              acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(src[j * 16 + c]), wv, acc[j]);
          }
        } else {
          for (int c = 0; c < 16; ++c) {
            const __m512 wv = _mm512_loadu_ps(wt + c * 16);
            for (int j = 0; j < nb; ++j)
              acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(src[j * 16 + c]), wv, acc[j]);
          }
        }
      } else {
        const int64_t off = t * d - p;
        const float* src = x + ((n * H + h) * W) * 16;
        const bool inside = (w0 + off >= 0) && (w0 + nb - 1 + off < W) && nb == B;
        if (inside) {
          const float* s = src + (w0 + off) * 16;
          for (int c = 0; c < 16; ++c) {
            const __m512 wv = _mm512_loadu_ps(wt + c * 16);
            for (int j = 0; j < B; ++j)
              acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(s[j * 16 + c]), wv, acc[j]);
          }
        } else {
          for (int j = 0; j < nb; ++j) {
            const int64_t ws = w0 + j + off;
            if (ws < 0 || ws >= W) continue;
            for (int c = 0; c < 16; ++c)
              acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(src[ws * 16 + c]),
                                       _mm512_loadu_ps(wt + c * 16), acc[j]);
          }
        }
      }
    }
    for (int j = 0; j < nb; ++j) {
      __m512 v = acc[j];
      if (rrow) v = _mm512_add_ps(v, _mm512_loadu_ps(rrow + (w0 + j) * 16));
      if (relu) v = _mm512_max_ps(v, zero);
      _mm512_storeu_ps(yrow + (w0 + j) * 16, v);
    }
  }
}

// Work split over XLA's intra-op thread pool, the one its own operations run on (so a
// kernel never competes for a core with an XLA worker spinning idle). [0, rows) is cut
// into a fixed number of even parts (a function of rows and threads only, so results
// never depend on timing); the calling thread and threads - 1 pool tasks claim parts
// until none is left, and the call returns once all have run. A task that starts late
// finds nothing to claim: it touches only the shared queue and returns.
struct PartQueue {
  std::atomic<int64_t> next{0}, done{0};
  int64_t parts = 0;
  std::function<void(int64_t)> run;
};

static void drain(PartQueue& queue) {
  for (int64_t part; (part = queue.next.fetch_add(1)) < queue.parts;) {
    queue.run(part);
    queue.done.fetch_add(1, std::memory_order_release);
  }
}

static int64_t part_count(int64_t rows, int64_t threads) {
  return std::max<int64_t>(1, std::min<int64_t>(rows, threads > 1 ? 4 * threads : 1));
}

// Calls part_fn(part, begin, end) for each of part_count(rows, threads) slices
// [begin, end) of [0, rows); returns the number of slices.
template <typename PartFn>
static int64_t for_each_part(int64_t rows, int64_t threads, ffi::ThreadPool& pool,
                             const PartFn& part_fn) {
  const int64_t parts = part_count(rows, threads);
  auto queue = std::make_shared<PartQueue>();
  queue->parts = parts;
  queue->run = [&](int64_t part) {
    part_fn(part, rows * part / parts, rows * (part + 1) / parts);
  };
  for (int64_t helper = 1; helper < std::min(threads, parts); ++helper)
    pool.Schedule([queue] { drain(*queue); });
  drain(*queue);
  while (queue->done.load(std::memory_order_acquire) < parts) std::this_thread::yield();
  return parts;
}

// Calls row(r) for r in [0, rows), in the parts of for_each_part.
template <typename RowFn>
static void for_each_row(int64_t rows, int64_t threads, ffi::ThreadPool& pool,
                         const RowFn& row) {
  for_each_part(rows, threads, pool, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) row(r);
  });
}

// acc[j][z] += sum_c src[j * cin + c] * wt[c * cout + 16 * z ...], for nb <= NB pixels.
template <int NB, int NZ>
static inline void wide_fma(__m512 (&acc)[NB][NZ], const float* src, const float* wt,
                            int64_t cin, int64_t cout, int nb) {
  for (int64_t c = 0; c < cin; ++c) {
    __m512 wv[NZ];
    for (int z = 0; z < NZ; ++z) wv[z] = _mm512_loadu_ps(wt + c * cout + z * 16);
    if (nb == NB) {  // A compile-time trip count: the accumulators stay in registers.
      for (int j = 0; j < NB; ++j) {
        const __m512 v = _mm512_set1_ps(src[j * cin + c]);
        for (int z = 0; z < NZ; ++z) acc[j][z] = _mm512_fmadd_ps(v, wv[z], acc[j][z]);
      }
    } else {
      for (int j = 0; j < nb; ++j) {
        const __m512 v = _mm512_set1_ps(src[j * cin + c]);
        for (int z = 0; z < NZ; ++z) acc[j][z] = _mm512_fmadd_ps(v, wv[z], acc[j][z]);
      }
    }
  }
}

// Output row (n, h) for Cin input and Cout (a multiple of 16 * NZ) output channels: blocks of NB
// pixels by 16 * NZ output channels accumulate in registers, the weights of a tap
// stream through (k, Cin, Cout).
template <int NB, int NZ>
static void wide_row(const float* x, const float* w, const float* b, const float* res, float* y,
                     int64_t n, int64_t h, int64_t H, int64_t W, int64_t cin, int64_t cout,
                     int64_t k, int64_t d, bool vertical, bool relu) {
  const int64_t p = (k - 1) / 2 * d;
  const __m512 zero = _mm512_setzero_ps();
  float* yrow = y + ((n * H + h) * W) * cout;
  const float* rrow = res ? res + ((n * H + h) * W) * cout : nullptr;
  const float* xrow = x + ((n * H + h) * W) * cin;
  for (int64_t o0 = 0; o0 < cout; o0 += 16 * NZ) {
    for (int64_t w0 = 0; w0 < W; w0 += NB) {
      const int nb = static_cast<int>(std::min<int64_t>(NB, W - w0));
      __m512 acc[NB][NZ];
      for (int j = 0; j < NB; ++j)
        for (int z = 0; z < NZ; ++z) acc[j][z] = _mm512_loadu_ps(b + o0 + z * 16);
      for (int64_t t = 0; t < k; ++t) {
        const float* wt = w + t * cin * cout + o0;
        if (vertical) {
          const int64_t hs = h + t * d - p;
          if (hs < 0 || hs >= H) continue;
          wide_fma<NB, NZ>(acc, x + ((n * H + hs) * W + w0) * cin, wt, cin, cout, nb);
          continue;
        }
        const int64_t off = t * d - p;
        if (w0 + off >= 0 && w0 + nb - 1 + off < W) {
          wide_fma<NB, NZ>(acc, xrow + (w0 + off) * cin, wt, cin, cout, nb);
          continue;
        }
        for (int j = 0; j < nb; ++j) {  // A block reaching into the padding.
          const int64_t ws = w0 + j + off;
          if (ws < 0 || ws >= W) continue;
          const float* s = xrow + ws * cin;
          for (int64_t c = 0; c < cin; ++c) {
            const __m512 v = _mm512_set1_ps(s[c]);
            for (int z = 0; z < NZ; ++z)
              acc[j][z] = _mm512_fmadd_ps(v, _mm512_loadu_ps(wt + c * cout + z * 16), acc[j][z]);
          }
        }
      }
      for (int j = 0; j < nb; ++j)
        for (int z = 0; z < NZ; ++z) {
          const int64_t at = (w0 + j) * cout + o0 + z * 16;
          __m512 v = acc[j][z];
          if (rrow) v = _mm512_add_ps(v, _mm512_loadu_ps(rrow + at));
          if (relu) v = _mm512_max_ps(v, zero);
          _mm512_storeu_ps(yrow + at, v);
        }
    }
  }
}

static ffi::Error ConvKx1Impl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                              ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> res,
                              ffi::ResultBuffer<ffi::F32> y, int64_t vertical, int64_t dilation,
                              int64_t relu, int64_t has_res, int64_t threads,
                              ffi::ThreadPool pool) {
  auto dims = x.dimensions();
  auto wd = w.dimensions();
  if (dims.size() != 4 || wd.size() != 3 || wd[1] != dims[3] || wd[2] % 16 ||
      y->dimensions()[3] != wd[2] || (has_res && res.element_count() != y->element_count()))
    return ffi::Error::InvalidArgument(
        "esnet_conv_kx1: x must be (N, H, W, Cin), w (k, Cin, Cout), Cout a multiple of 16, "
        "the residual (N, H, W, Cout)");
  const int64_t N = dims[0], H = dims[1], W = dims[2], cin = dims[3];
  const int64_t k = wd[0], cout = wd[2];
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  const float* bp = b.typed_data();
  const float* rp = has_res ? res.typed_data() : nullptr;
  float* yp = y->typed_data();
  const bool vert = vertical != 0, rl = relu != 0;
  for_each_row(N * H, threads, pool, [&](int64_t r) {
    const int64_t n = r / H, h = r % H;
    if (cin == 16 && cout == 16)
      conv_row(xp, wp, bp, rp, yp, n, h, H, W, k, dilation, vert, rl);
    else if (cout % 64 == 0)
      wide_row<6, 4>(xp, wp, bp, rp, yp, n, h, H, W, cin, cout, k, dilation, vert, rl);
    else if (cout % 32 == 0)
      wide_row<12, 2>(xp, wp, bp, rp, yp, n, h, H, W, cin, cout, k, dilation, vert, rl);
    else
      wide_row<12, 1>(xp, wp, bp, rp, yp, n, h, H, W, cin, cout, k, dilation, vert, rl);
  });
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvKx1, ConvKx1Impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("vertical")
                                  .Attr<int64_t>("dilation")
                                  .Attr<int64_t>("relu")
                                  .Attr<int64_t>("has_res")
                                  .Attr<int64_t>("threads")
                                  .Ctx<ffi::ThreadPool>());

// The decoder's output layer: a 2x2 stride-2 transposed convolution from 16 channels to
// `out` <= 32 channels (PyTorch ConvTranspose2d(16, out, 2, stride=2)): output pixel
// (2m+a, 2n+b) = bias + x[m, n] @ w[a, b], written straight into the interleaved layout.
static void upsample_row(const float* x, const float* w, const float* b, float* y, int64_t n,
                         int64_t m, int64_t H, int64_t W, int64_t out) {
  const __mmask16 lo = out >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << out) - 1);
  const __mmask16 hi = out > 16 ? static_cast<__mmask16>((1u << (out - 16)) - 1) : 0;
  const __m512 b0 = _mm512_maskz_loadu_ps(lo, b);
  const __m512 b1 = _mm512_maskz_loadu_ps(hi, b + 16);
  const float* xrow = x + ((n * H + m) * W) * 16;
  for (int a = 0; a < 2; ++a) {
    float* yrow = y + ((n * 2 * H + 2 * m + a) * 2 * W) * out;
    for (int bb = 0; bb < 2; ++bb) {
      const float* wab = w + (a * 2 + bb) * 16 * out;
      for (int64_t px = 0; px < W; ++px) {
        __m512 acc0 = b0, acc1 = b1;
        const float* src = xrow + px * 16;
        for (int c = 0; c < 16; ++c) {
          const __m512 v = _mm512_set1_ps(src[c]);
          acc0 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(lo, wab + c * out), acc0);
          if (hi) acc1 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(hi, wab + c * out + 16), acc1);
        }
        float* dst = yrow + (2 * px + bb) * out;
        _mm512_mask_storeu_ps(dst, lo, acc0);
        if (hi) _mm512_mask_storeu_ps(dst + 16, hi, acc1);
      }
    }
  }
}

static ffi::Error Upsample16Impl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                                 ffi::Buffer<ffi::F32> b, ffi::ResultBuffer<ffi::F32> y,
                                 int64_t threads, ffi::ThreadPool pool) {
  auto dims = x.dimensions();
  auto wd = w.dimensions();
  if (dims.size() != 4 || dims[3] != 16 || wd.size() != 4 || wd[0] != 2 || wd[1] != 2 ||
      wd[2] != 16 || wd[3] > 32)
    return ffi::Error::InvalidArgument(
        "esnet_upsample16: x must be (N, H, W, 16), w (2, 2, 16, out <= 32)");
  const int64_t N = dims[0], H = dims[1], W = dims[2], out = wd[3];
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  const float* bp = b.typed_data();
  float* yp = y->typed_data();
  for_each_row(N * H, threads, pool, [&](int64_t r) {
    upsample_row(xp, wp, bp, yp, r / H, r % H, H, W, out);
  });
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(Upsample16, Upsample16Impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("threads")
                                  .Ctx<ffi::ThreadPool>());

// Gradient of a convolution (NHWC, a KY x KX kernel with strides (sy, sx), dilation
// (dil_y, dil_x), tap (0, 0) reading input pixel (h * sy + off_y, w * sx + off_x); any
// Cin, Cout a multiple of 16) with respect to its kernel and bias, for one output row
// (n, h): dw[t] += x_t^T dy and db += sum(dy), where x_t holds the input pixels tap t
// reads (zero padding contributes nothing). Outer products of CI input
// channels by NZ registers of output channels accumulate in registers: no transposes,
// unlike XLA's.
template <int CI, int NZ>
static void wgrad_tile(const float* src, int64_t src_stride, const float* g, int64_t g_stride,
                       int64_t count, float* dw, int64_t cout) {
  __m512 acc[CI][NZ];
  for (int c = 0; c < CI; ++c)
    for (int z = 0; z < NZ; ++z) acc[c][z] = _mm512_loadu_ps(dw + c * cout + z * 16);
  for (int64_t i = 0; i < count; ++i) {
    __m512 gv[NZ];
    for (int z = 0; z < NZ; ++z) gv[z] = _mm512_loadu_ps(g + i * g_stride + z * 16);
    const float* s = src + i * src_stride;
    for (int c = 0; c < CI; ++c) {
      const __m512 v = _mm512_set1_ps(s[c]);
      for (int z = 0; z < NZ; ++z) acc[c][z] = _mm512_fmadd_ps(v, gv[z], acc[c][z]);
    }
  }
  for (int c = 0; c < CI; ++c)
    for (int z = 0; z < NZ; ++z) _mm512_storeu_ps(dw + c * cout + z * 16, acc[c][z]);
}

// dw[c][o] += sum over count pixels of src[c] * g[o], for every input channel c < cin
// (any number) and output channel o < cout (a multiple of 16).
static void wgrad_span(const float* src, int64_t src_stride, const float* g, int64_t g_stride,
                       int64_t count, float* dw, int64_t cin, int64_t cout) {
  if (cout == 16) {
    int64_t c = 0;
    for (; c + 16 <= cin; c += 16)
      wgrad_tile<16, 1>(src + c, src_stride, g, g_stride, count, dw + c * cout, cout);
    for (; c < cin; ++c)
      wgrad_tile<1, 1>(src + c, src_stride, g, g_stride, count, dw + c * cout, cout);
    return;
  }
  const int64_t pairs = cout / 32 * 32;  // Output channels taken 32 at a time.
  int64_t c = 0;
  for (; c + 8 <= cin; c += 8) {
    for (int64_t o = 0; o < pairs; o += 32)
      wgrad_tile<8, 2>(src + c, src_stride, g + o, g_stride, count, dw + c * cout + o, cout);
    if (pairs < cout)  // A last block of 16 output channels.
      wgrad_tile<8, 1>(src + c, src_stride, g + pairs, g_stride, count, dw + c * cout + pairs,
                       cout);
  }
  for (; c < cin; ++c) {
    for (int64_t o = 0; o < pairs; o += 32)
      wgrad_tile<1, 2>(src + c, src_stride, g + o, g_stride, count, dw + c * cout + o, cout);
    if (pairs < cout)
      wgrad_tile<1, 1>(src + c, src_stride, g + pairs, g_stride, count, dw + c * cout + pairs,
                       cout);
  }
}

// Output row (n, h) of a convolution with strides (sy, sx): tap (ty, tx) reads input
// pixel (h * sy + ty * dil_y + off_y, w * sx + tx * dil_x + off_x) of x (N, HI, WI, cin)
// for output pixel (h, w) of dy (N, H, W, cout).
static void wgrad_row(const float* x, const float* dy, float* dw, float* db, int64_t n,
                      int64_t h, int64_t HI, int64_t WI, int64_t H, int64_t W, int64_t cin,
                      int64_t cout, int64_t KY, int64_t KX, int64_t sy, int64_t sx,
                      int64_t dil_y, int64_t dil_x, int64_t off_y, int64_t off_x) {
  const float* dyrow = dy + ((n * H + h) * W) * cout;
  for (int64_t o = 0; o < cout; o += 16) {
    __m512 bacc = _mm512_loadu_ps(db + o);
    for (int64_t w = 0; w < W; ++w)
      bacc = _mm512_add_ps(bacc, _mm512_loadu_ps(dyrow + w * cout + o));
    _mm512_storeu_ps(db + o, bacc);
  }
  for (int64_t ty = 0; ty < KY; ++ty) {
    const int64_t hs = h * sy + ty * dil_y + off_y;
    if (hs < 0 || hs >= HI) continue;
    const float* src = x + ((n * HI + hs) * WI) * cin;
    for (int64_t tx = 0; tx < KX; ++tx) {
      // Output pixel w reads input pixel w * sx + shift of row hs.
      const int64_t shift = tx * dil_x + off_x;
      const int64_t w_begin = shift >= 0 ? 0 : (-shift + sx - 1) / sx;
      const int64_t last = WI - 1 - shift;  // The last readable input pixel, minus shift.
      const int64_t w_end = last < 0 ? 0 : std::min<int64_t>(W, last / sx + 1);
      if (w_end <= w_begin) continue;
      wgrad_span(src + (w_begin * sx + shift) * cin, sx * cin, dyrow + w_begin * cout, cout,
                 w_end - w_begin, dw + (ty * KX + tx) * cin * cout, cin, cout);
    }
  }
}

static ffi::Error ConvWgradImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                                ffi::ResultBuffer<ffi::F32> dw, ffi::ResultBuffer<ffi::F32> db,
                                int64_t stride_y, int64_t stride_x, int64_t dil_y,
                                int64_t dil_x, int64_t off_y, int64_t off_x, int64_t threads,
                                ffi::ThreadPool pool) {
  auto xd = x.dimensions();
  auto gd = dy.dimensions();
  auto wd = dw->dimensions();
  if (xd.size() != 4 || gd.size() != 4 || wd.size() != 4 || xd[0] != gd[0] || gd[3] % 16 ||
      wd[2] != xd[3] || wd[3] != gd[3] || stride_y < 1 || stride_x < 1)
    return ffi::Error::InvalidArgument(
        "esnet_conv_wgrad: x (N, HI, WI, Cin) and dy (N, H, W, Cout) with Cout a multiple "
        "of 16, dw (KY, KX, Cin, Cout), strides >= 1");
  const int64_t N = xd[0], HI = xd[1], WI = xd[2], cin = xd[3];
  const int64_t H = gd[1], W = gd[2], cout = gd[3];
  const int64_t KY = wd[0], KX = wd[1], kernel_size = KY * KX * cin * cout;
  const int64_t size = kernel_size + cout;  // dw then db, per thread
  std::vector<float> partial(part_count(N * H, threads) * size, 0.f);
  const float* xp = x.typed_data();
  const float* gp = dy.typed_data();
  const int64_t parts = for_each_part(N * H, threads, pool, [&](int64_t part, int64_t begin,
                                                                  int64_t end) {
    float* acc = partial.data() + part * size;
    for (int64_t r = begin; r < end; ++r)
      wgrad_row(xp, gp, acc, acc + kernel_size, r / H, r % H, HI, WI, H, W, cin, cout, KY, KX,
                stride_y, stride_x, dil_y, dil_x, off_y, off_x);
  });
  float* dwp = dw->typed_data();
  float* dbp = db->typed_data();
  for (int64_t i = 0; i < size; ++i) {  // Fixed order: the result does not depend on timing.
    float sum = 0.f;
    for (int64_t part = 0; part < parts; ++part) sum += partial[part * size + i];
    if (i < kernel_size) dwp[i] = sum; else dbp[i - kernel_size] = sum;
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvWgrad, ConvWgradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride_y")
                                  .Attr<int64_t>("stride_x")
                                  .Attr<int64_t>("dil_y")
                                  .Attr<int64_t>("dil_x")
                                  .Attr<int64_t>("off_y")
                                  .Attr<int64_t>("off_x")
                                  .Attr<int64_t>("threads")
                                  .Ctx<ffi::ThreadPool>());

// Per-channel sums for training-mode BatchNorm over NHWC rows of C (a multiple of 16)
// channels, one pass and no reduce trees: sum(x) and sum(x * x) for the statistics, or
// sum(dy) and sum(dy * (x - mean)) for the gradient. Pixels go in chunks that stay in
// L1 while each 16-channel group is summed; each thread keeps its own partial sums.
template <bool GRAD>
static void channel_sums_chunk(const float* a, const float* x, const float* mean, int64_t begin,
                               int64_t end, int64_t C, float* s1, float* s2) {
  constexpr int64_t CHUNK = 64;
  for (int64_t p0 = begin; p0 < end; p0 += CHUNK) {
    const int64_t p1 = std::min(end, p0 + CHUNK);
    for (int64_t c = 0; c < C; c += 16) {
      __m512 acc1 = _mm512_loadu_ps(s1 + c), acc2 = _mm512_loadu_ps(s2 + c);
      const __m512 m = GRAD ? _mm512_loadu_ps(mean + c) : _mm512_setzero_ps();
      for (int64_t p = p0; p < p1; ++p) {
        const __m512 v = _mm512_loadu_ps(a + p * C + c);
        acc1 = _mm512_add_ps(acc1, v);
        const __m512 u = GRAD ? _mm512_sub_ps(_mm512_loadu_ps(x + p * C + c), m) : v;
        acc2 = _mm512_fmadd_ps(v, u, acc2);
      }
      _mm512_storeu_ps(s1 + c, acc1);
      _mm512_storeu_ps(s2 + c, acc2);
    }
  }
}

template <bool GRAD>
static ffi::Error ChannelSumsImpl(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> x,
                                  ffi::Buffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> s1,
                                  ffi::ResultBuffer<ffi::F32> s2, int64_t threads,
                                  ffi::ThreadPool pool) {
  auto dims = a.dimensions();
  const int64_t C = dims.size() == 0 ? 0 : dims[dims.size() - 1];
  if (dims.size() == 0 || C % 16 || (GRAD && x.element_count() != a.element_count()) ||
      s1->element_count() != C)
    return ffi::Error::InvalidArgument(
        "esnet_channel_sums: arrays (..., C) with C a multiple of 16, sums (C,)");
  const int64_t rows = a.element_count() / C;
  // At most 64 pixels' worth of threads: small arrays are not worth a thread each.
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(threads, rows / 64));
  const int64_t parts = part_count(rows, workers);
  std::vector<float> partial(parts * 2 * C, 0.f);
  const float* ap = a.typed_data();
  const float* xp = GRAD ? x.typed_data() : nullptr;
  const float* mp = GRAD ? mean.typed_data() : nullptr;
  for_each_part(rows, workers, pool, [&](int64_t part, int64_t begin, int64_t end) {
    float* acc = partial.data() + part * 2 * C;
    channel_sums_chunk<GRAD>(ap, xp, mp, begin, end, C, acc, acc + C);
  });
  float* o1 = s1->typed_data();
  float* o2 = s2->typed_data();
  for (int64_t c = 0; c < C; ++c) {  // Fixed order: the result does not depend on timing.
    float t1 = 0.f, t2 = 0.f;
    for (int64_t part = 0; part < parts; ++part) {
      t1 += partial[part * 2 * C + c];
      t2 += partial[part * 2 * C + C + c];
    }
    o1[c] = t1;
    o2[c] = t2;
  }
  return ffi::Error::Success();
}

#define ESNET_CHANNEL_SUMS_BINDING                \
  ffi::Ffi::Bind()                                \
      .Arg<ffi::Buffer<ffi::F32>>()               \
      .Arg<ffi::Buffer<ffi::F32>>()               \
      .Arg<ffi::Buffer<ffi::F32>>()               \
      .Ret<ffi::Buffer<ffi::F32>>()               \
      .Ret<ffi::Buffer<ffi::F32>>()               \
      .Attr<int64_t>("threads")                   \
      .Ctx<ffi::ThreadPool>()
XLA_FFI_DEFINE_HANDLER_SYMBOL(ChannelMoments, ChannelSumsImpl<false>, ESNET_CHANNEL_SUMS_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(ChannelGradSums, ChannelSumsImpl<true>, ESNET_CHANNEL_SUMS_BINDING);
