// ESNet's CPU kernels bound to XLA's FFI (esnet_jax/kernels/build.py compiles, loads and
// registers them; esnet_jax/kernels/ops.py calls them): the factorised convolution (kx1
// or 1xk, 'same' padding, dilation d; bias, residual and ReLU fused), the 2x2 stride-2
// output transposed convolution, the weight gradient of any convolution, and
// BatchNorm's per-channel sums. NHWC, float32 or (the products of the factorised
// convolution, the weight gradient and the sums) bfloat16.
//
// The compute is in kernels.h: portable C++ in GCC/Clang vector extensions, one source
// for AVX-512, AVX2+FMA and NEON, register blocks chosen per ISA at compile time (its
// header says how and why). This file holds only what touches XLA: argument checks, the
// split of rows over XLA's intra-op thread pool, and the handler symbols.
#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <thread>
#include <cstdint>
#include <vector>
#include "kernels.h"
#include "xla/ffi/api/ffi.h"
namespace ffi = xla::ffi;
using namespace esnet;

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

// The factorised convolution with P's products (kernels.h F32Dot, BF16Dot): x, res and y
// of element type DT (F32 or BF16), w and b float32 (rounded here as P reads them).
template <ffi::DataType DT, class P>
static ffi::Error ConvKx1Impl(ffi::Buffer<DT> x, ffi::Buffer<ffi::F32> w,
                              ffi::Buffer<ffi::F32> b, ffi::Buffer<DT> res,
                              ffi::ResultBuffer<DT> y, int64_t vertical, int64_t dilation,
                              int64_t relu, int64_t has_res, int64_t threads,
                              ffi::ThreadPool pool) {
  using A = typename P::T;
  auto dims = x.dimensions();
  auto wd = w.dimensions();
  if (dims.size() != 4 || wd.size() != 3 || wd[1] != dims[3] || wd[2] % 16 ||
      dims[3] % P::kStep || y->dimensions()[3] != wd[2] ||
      (has_res && res.element_count() != y->element_count()))
    return ffi::Error::InvalidArgument(
        "esnet_conv_kx1: x must be (N, H, W, Cin), w (k, Cin, Cout), Cout a multiple of 16 "
        "(and Cin even in bfloat16), the residual (N, H, W, Cout)");
  const int64_t N = dims[0], H = dims[1], W = dims[2], cin = dims[3];
  const int64_t k = wd[0], cout = wd[2];
  const A* xp = reinterpret_cast<const A*>(x.typed_data());
  const float* wp = w.typed_data();
  const float* bp = b.typed_data();
  const A* rp = has_res ? reinterpret_cast<const A*>(res.typed_data()) : nullptr;
  A* yp = reinterpret_cast<A*>(y->typed_data());
  const bool vert = vertical != 0, rl = relu != 0;
  std::vector<typename P::WT> packed;
  if (winograd_applies(k, cin, cout)) {  // F(m, k): transformed weights, then row tasks.
    std::vector<float> wt(kWinogradInputs * cin * cout);
    winograd_weights(k, wp, wt.data(), cin, cout);
    if constexpr (!std::is_same_v<typename P::WT, float>) packed.resize(wt.size());
    const auto* wtp = pack_weights<P>(wt.data(), kWinogradInputs * cin, cout, packed.data());
    for_each_row(winograd_tasks(N, H, k, dilation, vert), threads, pool, [&](int64_t task) {
      thread_local std::vector<A> scratch;
      scratch.resize(kWinogradInputs * kWinogradChunk * cin);
      winograd_task<P>(task, k, xp, wtp, bp, rp, yp, H, W, cin, cout, dilation, vert, rl,
                       scratch.data());
    });
    return ffi::Error::Success();
  }
  if constexpr (!std::is_same_v<typename P::WT, float>) packed.resize(k * cin * cout);
  const auto* wpp = pack_weights<P>(wp, k * cin, cout, packed.data());
  for_each_row(N * H, threads, pool, [&](int64_t r) {
    const int64_t n = r / H, h = r % H;
    conv_kx1_row<P>(xp, wpp, bp, rp, yp, n, h, H, W, cin, cout, k, dilation, vert, rl);
  });
  return ffi::Error::Success();
}

#define ESNET_CONV_KX1_BINDING(DT)                \
  ffi::Ffi::Bind()                                \
      .Arg<ffi::Buffer<DT>>()                     \
      .Arg<ffi::Buffer<ffi::F32>>()               \
      .Arg<ffi::Buffer<ffi::F32>>()               \
      .Arg<ffi::Buffer<DT>>()                     \
      .Ret<ffi::Buffer<DT>>()                     \
      .Attr<int64_t>("vertical")                  \
      .Attr<int64_t>("dilation")                  \
      .Attr<int64_t>("relu")                      \
      .Attr<int64_t>("has_res")                   \
      .Attr<int64_t>("threads")                   \
      .Ctx<ffi::ThreadPool>()
XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvKx1, (ConvKx1Impl<ffi::F32, F32Dot>),
                              ESNET_CONV_KX1_BINDING(ffi::F32));
#if defined(ESNET_BF16_DOT)
XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvKx1Bf16, (ConvKx1Impl<ffi::BF16, BF16Dot>),
                              ESNET_CONV_KX1_BINDING(ffi::BF16));
#endif

// A small dense convolution (kernels.h conv2d_row): ESNet's stride-2 downsampling
// convolutions and the phases of its transposed convolutions. x (N, HI, WI, Cin), w (KY,
// KX, Cin, Cout) float32, b (Cout) float32; Cout a multiple of 16 (Cin even in bfloat16).
// Tap (ty, tx) of output pixel (h, w) reads input pixel (h * stride_y + ty + off_y, w *
// stride_x + tx + off_x), zeros outside. Conv2d returns y (N, Ho, Wo, Cout); Conv2dPhase
// writes its rows x cols outputs into every other pixel of `into` (N, 2 rows, 2 cols,
// Cout; phase (phase_y, phase_x)), which it returns (aliased: four calls fill one
// transposed convolution's output without a separate interleave).
template <bool PHASE, ffi::DataType DT, class P>
static ffi::Error Conv2dImpl(ffi::Buffer<DT> x, ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> b,
                             ffi::ResultBuffer<DT> y, int64_t stride_y, int64_t stride_x,
                             int64_t off_y, int64_t off_x, int64_t phase_y, int64_t phase_x,
                             int64_t threads, ffi::ThreadPool pool) {
  using A = typename P::T;
  auto xd = x.dimensions();
  auto wd = w.dimensions();
  auto yd = y->dimensions();
  if (xd.size() != 4 || wd.size() != 4 || yd.size() != 4 || wd[2] != xd[3] || wd[3] % 16 ||
      yd[3] != wd[3] || yd[0] != xd[0] || xd[3] % P::kStep || stride_y < 1 || stride_x < 1 ||
      (PHASE && (yd[1] % 2 || yd[2] % 2)))
    return ffi::Error::InvalidArgument(
        "esnet_conv2d: x (N, HI, WI, Cin), w (KY, KX, Cin, Cout) with Cout a multiple of 16 "
        "(and Cin even in bfloat16), y (N, Ho, Wo, Cout) (even Ho and Wo for a phase), "
        "strides >= 1");
  const int64_t N = xd[0], HI = xd[1], WI = xd[2], cin = xd[3];
  const int64_t KY = wd[0], KX = wd[1], cout = wd[3];
  const int64_t rows = PHASE ? yd[1] / 2 : yd[1], cols = PHASE ? yd[2] / 2 : yd[2];
  const A* xp = reinterpret_cast<const A*>(x.typed_data());
  A* yp = reinterpret_cast<A*>(y->typed_data());
  const float* bp = b.typed_data();
  std::vector<typename P::WT> packed;
  if constexpr (!std::is_same_v<typename P::WT, float>) packed.resize(KY * KX * cin * cout);
  const auto* wp = pack_weights<P>(w.typed_data(), KY * KX * cin, cout, packed.data());
  const int64_t ypix = PHASE ? 2 * cout : cout, yrow_size = yd[2] * cout;
  for_each_row(N * rows, threads, pool, [&](int64_t r) {
    const int64_t n = r / rows, h = r % rows;
    A* yrow = yp + (n * yd[1] + (PHASE ? 2 * h + phase_y : h)) * yrow_size +
              (PHASE ? phase_x * cout : 0);
    conv2d_row<P>(xp, wp, bp, yrow, ypix, n, h, HI, WI, cols, cin, cout, KY, KX, stride_y,
                  stride_x, off_y, off_x);
  });
  return ffi::Error::Success();
}

template <ffi::DataType DT, class P>
static ffi::Error Conv2dPlainImpl(ffi::Buffer<DT> x, ffi::Buffer<ffi::F32> w,
                              ffi::Buffer<ffi::F32> b, ffi::ResultBuffer<DT> y,
                              int64_t stride_y, int64_t stride_x, int64_t off_y, int64_t off_x,
                              int64_t threads, ffi::ThreadPool pool) {
  return Conv2dImpl<false, DT, P>(x, w, b, y, stride_y, stride_x, off_y, off_x, 0, 0, threads,
                                  pool);
}

template <ffi::DataType DT, class P>
static ffi::Error Conv2dPhaseImpl(ffi::Buffer<DT> x, ffi::Buffer<ffi::F32> w,
                              ffi::Buffer<ffi::F32> b, ffi::Buffer<DT> into,
                              ffi::ResultBuffer<DT> y, int64_t off_y, int64_t off_x,
                              int64_t phase_y, int64_t phase_x, int64_t threads,
                              ffi::ThreadPool pool) {
  if (into.untyped_data() != y->untyped_data())
    return ffi::Error::InvalidArgument("esnet_conv2d_phase: `into` must alias the result");
  return Conv2dImpl<true, DT, P>(x, w, b, y, 1, 1, off_y, off_x, phase_y, phase_x, threads,
                                 pool);
}

#define ESNET_CONV2D_BINDING(DT)                  \
  ffi::Ffi::Bind()                                \
      .Arg<ffi::Buffer<DT>>()                     \
      .Arg<ffi::Buffer<ffi::F32>>()               \
      .Arg<ffi::Buffer<ffi::F32>>()               \
      .Ret<ffi::Buffer<DT>>()                     \
      .Attr<int64_t>("stride_y")                  \
      .Attr<int64_t>("stride_x")                  \
      .Attr<int64_t>("off_y")                     \
      .Attr<int64_t>("off_x")                     \
      .Attr<int64_t>("threads")                   \
      .Ctx<ffi::ThreadPool>()
#define ESNET_CONV2D_PHASE_BINDING(DT)            \
  ffi::Ffi::Bind()                                \
      .Arg<ffi::Buffer<DT>>()                     \
      .Arg<ffi::Buffer<ffi::F32>>()               \
      .Arg<ffi::Buffer<ffi::F32>>()               \
      .Arg<ffi::Buffer<DT>>()                     \
      .Ret<ffi::Buffer<DT>>()                     \
      .Attr<int64_t>("off_y")                     \
      .Attr<int64_t>("off_x")                     \
      .Attr<int64_t>("phase_y")                   \
      .Attr<int64_t>("phase_x")                   \
      .Attr<int64_t>("threads")                   \
      .Ctx<ffi::ThreadPool>()
XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv2d, (Conv2dPlainImpl<ffi::F32, F32Dot>),
                              ESNET_CONV2D_BINDING(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv2dPhase, (Conv2dPhaseImpl<ffi::F32, F32Dot>),
                              ESNET_CONV2D_PHASE_BINDING(ffi::F32));
#if defined(ESNET_BF16_DOT)
XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv2dBf16, (Conv2dPlainImpl<ffi::BF16, BF16Dot>),
                              ESNET_CONV2D_BINDING(ffi::BF16));
XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv2dPhaseBf16, (Conv2dPhaseImpl<ffi::BF16, BF16Dot>),
                              ESNET_CONV2D_PHASE_BINDING(ffi::BF16));
#endif

// The decoder's output layer: PyTorch ConvTranspose2d(16, out <= 32, 2, stride=2).
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
  float wpad[4 * 16 * 32], bpad[32];  // w and b with `out` padded to 16 or 32 channels
  upsample16_pad(wp, bp, out, wpad, bpad);
  for_each_row(N * H, threads, pool, [&](int64_t r) {
    upsample16_row(xp, wpad, bpad, yp, r / H, r % H, H, W, out);
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

// Kernel and bias gradients of a convolution (kernels.h wgrad_row, or wgrad_row_pairs
// in bfloat16 with bf16 dot products); each part of the rows accumulates its own, added
// in a fixed order.
template <ffi::DataType DT, class P>
static ffi::Error ConvWgradImpl(ffi::Buffer<DT> x, ffi::Buffer<DT> dy,
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
  using A = typename P::T;
  const A* xp = reinterpret_cast<const A*>(x.typed_data());
  const A* gp = reinterpret_cast<const A*>(dy.typed_data());
  const int64_t parts = for_each_part(N * H, threads, pool, [&](int64_t part, int64_t begin,
                                                                  int64_t end) {
    float* acc = partial.data() + part * size;
#if defined(ESNET_BF16_DOT)
    if constexpr (std::is_same_v<P, BF16Dot>) {
      thread_local std::vector<bf16> gpairs, xpairs;
      gpairs.resize((kWgradChunk + 1) * cout);
      xpairs.resize((kWgradChunk + 1) * cin);
      for (int64_t r = begin; r < end; ++r)
        wgrad_row_pairs(xp, gp, acc, acc + kernel_size, r / H, r % H, HI, WI, H, W, cin, cout,
                        KY, KX, stride_y, stride_x, dil_y, dil_x, off_y, off_x, gpairs.data(),
                        xpairs.data());
      return;
    }
#endif
    for (int64_t r = begin; r < end; ++r)
      wgrad_row<P>(xp, gp, acc, acc + kernel_size, r / H, r % H, HI, WI, H, W, cin, cout, KY,
                   KX, stride_y, stride_x, dil_y, dil_x, off_y, off_x);
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

#define ESNET_CONV_WGRAD_BINDING(DT)              \
  ffi::Ffi::Bind()                                \
      .Arg<ffi::Buffer<DT>>()                     \
      .Arg<ffi::Buffer<DT>>()                     \
      .Ret<ffi::Buffer<ffi::F32>>()               \
      .Ret<ffi::Buffer<ffi::F32>>()               \
      .Attr<int64_t>("stride_y")                  \
      .Attr<int64_t>("stride_x")                  \
      .Attr<int64_t>("dil_y")                     \
      .Attr<int64_t>("dil_x")                     \
      .Attr<int64_t>("off_y")                     \
      .Attr<int64_t>("off_x")                     \
      .Attr<int64_t>("threads")                   \
      .Ctx<ffi::ThreadPool>()
XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvWgrad, (ConvWgradImpl<ffi::F32, F32Dot>),
                              ESNET_CONV_WGRAD_BINDING(ffi::F32));
#if defined(ESNET_BF16_DOT)
XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvWgradBf16, (ConvWgradImpl<ffi::BF16, BF16Dot>),
                              ESNET_CONV_WGRAD_BINDING(ffi::BF16));
#else
XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvWgradBf16, (ConvWgradImpl<ffi::BF16, BF16Load>),
                              ESNET_CONV_WGRAD_BINDING(ffi::BF16));
#endif

// BatchNorm's per-channel sums (kernels.h channel_sums_chunk); each part of the rows keeps
// its own partial sums, added in a fixed order.
template <bool GRAD, ffi::DataType DT, class A>
static ffi::Error ChannelSumsImpl(ffi::Buffer<DT> a, ffi::Buffer<DT> x,
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
  const A* ap = reinterpret_cast<const A*>(a.typed_data());
  const A* xp = GRAD ? reinterpret_cast<const A*>(x.typed_data()) : nullptr;
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

#define ESNET_CHANNEL_SUMS_BINDING(DT)            \
  ffi::Ffi::Bind()                                \
      .Arg<ffi::Buffer<DT>>()                     \
      .Arg<ffi::Buffer<DT>>()                     \
      .Arg<ffi::Buffer<ffi::F32>>()               \
      .Ret<ffi::Buffer<ffi::F32>>()               \
      .Ret<ffi::Buffer<ffi::F32>>()               \
      .Attr<int64_t>("threads")                   \
      .Ctx<ffi::ThreadPool>()
XLA_FFI_DEFINE_HANDLER_SYMBOL(ChannelMoments, (ChannelSumsImpl<false, ffi::F32, float>),
                              ESNET_CHANNEL_SUMS_BINDING(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ChannelGradSums, (ChannelSumsImpl<true, ffi::F32, float>),
                              ESNET_CHANNEL_SUMS_BINDING(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ChannelMomentsBf16, (ChannelSumsImpl<false, ffi::BF16, bf16>),
                              ESNET_CHANNEL_SUMS_BINDING(ffi::BF16));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ChannelGradSumsBf16, (ChannelSumsImpl<true, ffi::BF16, bf16>),
                              ESNET_CHANNEL_SUMS_BINDING(ffi::BF16));
