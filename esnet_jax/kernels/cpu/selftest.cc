// Self-test of kernels.h against plain scalar loops (double accumulation), no XLA needed:
// every kernel on several shapes (odd widths, dilations 1/2/5/9, strides, offsets,
// residual and ReLU, Cout 16..128, upsample outputs 11/19/32). Prints one OK/FAIL line
// per case and exits non-zero on any mismatch. Built and run by tests/test_kernels.py,
// natively and cross-compiled for aarch64 under qemu:
//   g++ -O2 -std=c++17 -ffp-contract=fast [-mavx2 -mfma] selftest.cc -o selftest
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels.h"

using esnet::L;
using std::int64_t;
using std::vector;

static std::mt19937 rng(12345);
static int failures = 0, cases = 0;

static vector<float> random(int64_t size) {
  std::normal_distribution<float> normal(0.f, 1.f);
  vector<float> v(size);
  for (auto& e : v) e = normal(rng);
  return v;
}

// Compares got with want, each element within 1e-5 of the sum of the absolute values of
// the terms that made it (`scale`) plus 1e-6.
static void check(const std::string& name, const vector<float>& got, const vector<double>& want,
                  const vector<double>& scale) {
  ++cases;
  double worst = 0;
  int64_t bad = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]), tol = 1e-5 * scale[i] + 1e-6;
    if (!(err <= tol) && (bad < 0 || err / tol > worst)) worst = err / tol, bad = i;
  }
  if (bad >= 0) {
    ++failures;
    std::printf("FAIL %s: element %lld is %g, want %g\n", name.c_str(), (long long)bad,
                got[bad], want[bad]);
  } else {
    std::printf("OK   %s\n", name.c_str());
  }
}

static void test_conv_kx1(int64_t N, int64_t H, int64_t W, int64_t cin, int64_t cout,
                          int64_t k, int64_t d, bool vertical, bool relu, bool residual) {
  auto x = random(N * H * W * cin), w = random(k * cin * cout), b = random(cout);
  auto res = random(N * H * W * cout);
  vector<float> y(N * H * W * cout, NAN);
  const float* rp = residual ? res.data() : nullptr;
  const bool winograd = esnet::winograd_applies(k, cin, cout);
  if (winograd) {  // As kernels.cc runs it.
    vector<float> wt(esnet::kWinogradInputs * cin * cout);
    vector<float> scratch(esnet::kWinogradInputs * esnet::kWinogradChunk * cin);
    esnet::winograd_weights(k, w.data(), wt.data(), cin, cout);
    for (int64_t t = 0; t < esnet::winograd_tasks(N, H, k, d, vertical); ++t)
      esnet::winograd_task(t, k, x.data(), wt.data(), b.data(), rp, y.data(), H, W, cin, cout,
                           d, vertical, relu, scratch.data());
  } else {
    for (int64_t r = 0; r < N * H; ++r)
      esnet::conv_kx1_row(x.data(), w.data(), b.data(), rp, y.data(), r / H, r % H, H, W, cin,
                          cout, k, d, vertical, relu);
  }
  vector<double> want(y.size()), scale(y.size());
  const int64_t p = (k - 1) / 2 * d;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t px = 0; px < W; ++px)
        for (int64_t o = 0; o < cout; ++o) {
          const int64_t at = ((n * H + h) * W + px) * cout + o;
          double s = b[o], a = std::fabs(b[o]);
          for (int64_t t = 0; t < k; ++t) {
            const int64_t hs = vertical ? h + t * d - p : h, ws = vertical ? px : px + t * d - p;
            if (hs < 0 || hs >= H || ws < 0 || ws >= W) continue;
            for (int64_t c = 0; c < cin; ++c) {
              const double term = double(x[((n * H + hs) * W + ws) * cin + c]) *
                                  w[(t * cin + c) * cout + o];
              s += term, a += std::fabs(term);
            }
          }
          if (residual) s += res[at], a += std::fabs(res[at]);
          want[at] = relu ? std::max(s, 0.0) : s;
          scale[at] = a;
        }
  char name[160];
  std::snprintf(name, sizeof name, "conv_kx1%s %lldx%lldx%lldx%lld->%lld k%lld d%lld %s%s%s",
                winograd ? " (winograd)" : "",
                (long long)N, (long long)H, (long long)W, (long long)cin, (long long)cout,
                (long long)k, (long long)d, vertical ? "vertical" : "horizontal",
                relu ? " relu" : "", residual ? " residual" : "");
  check(name, y, want, scale);
}

static void test_upsample16(int64_t N, int64_t H, int64_t W, int64_t out) {
  auto x = random(N * H * W * 16), w = random(4 * 16 * out), b = random(out);
  // A guard after y: the kernel must not write past `out` channels of the last pixel.
  vector<float> y(N * 4 * H * W * out + 64, NAN);
  vector<float> wpad(4 * 16 * 32), bpad(32);
  esnet::upsample16_pad(w.data(), b.data(), out, wpad.data(), bpad.data());
  for (int64_t r = 0; r < N * H; ++r)
    esnet::upsample16_row(x.data(), wpad.data(), bpad.data(), y.data(), r / H, r % H, H, W, out);
  vector<double> want(y.size(), NAN), scale(y.size(), 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < H; ++m)
      for (int64_t q = 0; q < W; ++q)
        for (int a = 0; a < 2; ++a)
          for (int bb = 0; bb < 2; ++bb)
            for (int64_t o = 0; o < out; ++o) {
              double s = b[o], sa = std::fabs(b[o]);
              for (int c = 0; c < 16; ++c) {
                const double term = double(x[((n * H + m) * W + q) * 16 + c]) *
                                    w[((a * 2 + bb) * 16 + c) * out + o];
                s += term, sa += std::fabs(term);
              }
              const int64_t at = ((n * 2 * H + 2 * m + a) * 2 * W + 2 * q + bb) * out + o;
              want[at] = s, scale[at] = sa;
            }
  char name[120];
  std::snprintf(name, sizeof name, "upsample16 %lldx%lldx%lldx16->%lld", (long long)N,
                (long long)H, (long long)W, (long long)out);
  // NaN == NaN for the guard: compare it separately.
  bool guard_ok = true;
  for (size_t i = y.size() - 64; i < y.size(); ++i) guard_ok &= std::isnan(y[i]);
  y.resize(y.size() - 64), want.resize(y.size()), scale.resize(y.size());
  if (!guard_ok) {
    ++cases, ++failures;
    std::printf("FAIL %s: wrote past the end of y\n", name);
    return;
  }
  check(name, y, want, scale);
}

static void test_wgrad(int64_t N, int64_t HI, int64_t WI, int64_t cin, int64_t cout, int64_t KY,
                       int64_t KX, int64_t sy, int64_t sx, int64_t dil_y, int64_t dil_x,
                       int64_t off_y, int64_t off_x, int64_t H, int64_t W) {
  auto x = random(N * HI * WI * cin), dy = random(N * H * W * cout);
  vector<float> dwb(KY * KX * cin * cout + cout, 0.f);
  float* dw = dwb.data();
  float* db = dw + KY * KX * cin * cout;
  for (int64_t r = 0; r < N * H; ++r)
    esnet::wgrad_row(x.data(), dy.data(), dw, db, r / H, r % H, HI, WI, H, W, cin, cout, KY, KX,
                     sy, sx, dil_y, dil_x, off_y, off_x);
  vector<double> want(dwb.size(), 0), scale(dwb.size(), 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t px = 0; px < W; ++px)
        for (int64_t o = 0; o < cout; ++o) {
          const double g = dy[((n * H + h) * W + px) * cout + o];
          want[KY * KX * cin * cout + o] += g, scale[KY * KX * cin * cout + o] += std::fabs(g);
          for (int64_t ty = 0; ty < KY; ++ty)
            for (int64_t tx = 0; tx < KX; ++tx) {
              const int64_t hs = h * sy + ty * dil_y + off_y, ws = px * sx + tx * dil_x + off_x;
              if (hs < 0 || hs >= HI || ws < 0 || ws >= WI) continue;
              for (int64_t c = 0; c < cin; ++c) {
                const double term = g * x[((n * HI + hs) * WI + ws) * cin + c];
                const int64_t at = ((ty * KX + tx) * cin + c) * cout + o;
                want[at] += term, scale[at] += std::fabs(term);
              }
            }
        }
  char name[200];
  std::snprintf(name, sizeof name,
                "conv_wgrad x %lldx%lldx%lldx%lld dy %lldx%lldx%lld taps %lldx%lld "
                "strides %lld,%lld dilation %lld,%lld offset %lld,%lld",
                (long long)N, (long long)HI, (long long)WI, (long long)cin, (long long)H,
                (long long)W, (long long)cout, (long long)KY, (long long)KX, (long long)sy,
                (long long)sx, (long long)dil_y, (long long)dil_x, (long long)off_y,
                (long long)off_x);
  check(name, dwb, want, scale);
}

template <bool GRAD>
static void test_channel_sums(int64_t pixels, int64_t C) {
  auto a = random(pixels * C), x = random(pixels * C), mean = random(C);
  vector<float> s(2 * C, 0.f);
  // Two uneven chunks, as two threads' parts would be, summed into the same sums.
  const int64_t mid = pixels / 3;
  esnet::channel_sums_chunk<GRAD>(a.data(), x.data(), mean.data(), 0, mid, C, s.data(),
                                  s.data() + C);
  esnet::channel_sums_chunk<GRAD>(a.data(), x.data(), mean.data(), mid, pixels, C, s.data(),
                                  s.data() + C);
  vector<double> want(2 * C, 0), scale(2 * C, 0);
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t c = 0; c < C; ++c) {
      const double u = a[p * C + c], v = GRAD ? x[p * C + c] - double(mean[c]) : u;
      want[c] += u, scale[c] += std::fabs(u);
      want[C + c] += u * v, scale[C + c] += std::fabs(u * v);
    }
  char name[100];
  std::snprintf(name, sizeof name, "%s %lld pixels x %lld channels",
                GRAD ? "channel_grad_sums" : "channel_moments", (long long)pixels, (long long)C);
  check(name, s, want, scale);
}

int main() {
  std::printf("kernels.h self-test: %s build, %d floats per vector\n", esnet::kIsa, L);
  for (bool vertical : {true, false}) {
    for (auto [k, d] : {std::pair<int, int>{3, 1}, {3, 2}, {3, 5}, {3, 9}, {5, 1}})
      for (auto [cin, cout] : {std::pair<int, int>{16, 16}, {64, 64}, {128, 128}})
        test_conv_kx1(cin == 128 ? 1 : 2, 11, cin == 128 ? 13 : 23, cin, cout, k, d, vertical,
                      false, false);
    for (auto [cin, cout] : {std::pair<int, int>{16, 48}, {64, 32}, {3, 16}, {32, 80},
                             {16, 128}, {128, 16}})
      test_conv_kx1(1, 9, 13, cin, cout, 3, 2, vertical, true, true);
    test_conv_kx1(1, 5, 1, 16, 16, 3, 1, vertical, true, false);   // one pixel wide
    test_conv_kx1(1, 3, 40, 16, 64, 3, 9, vertical, false, true);  // dilation past the edge
    test_conv_kx1(1, 4, 7, 64, 64, 5, 1, vertical, true, true);
    test_conv_kx1(1, 7, 101, 32, 48, 3, 2, vertical, true, true);   // rows of 2 chunks
    test_conv_kx1(2, 13, 9, 64, 64, 5, 5, vertical, false, true);   // dilation past the edge
    test_conv_kx1(1, 21, 17, 128, 128, 3, 9, vertical, true, false);
  }
  for (int out : {5, 11, 16, 19, 32}) test_upsample16(2, 5, 7, out);
  test_upsample16(1, 3, 13, 19);
  // Factorised convolutions (padding as a negative offset), strided and phase convolutions.
  test_wgrad(2, 11, 13, 16, 16, 3, 1, 1, 1, 1, 1, -1, 0, 11, 13);
  test_wgrad(2, 11, 13, 16, 16, 1, 3, 1, 1, 1, 9, 0, -9, 11, 13);
  test_wgrad(1, 9, 13, 64, 64, 5, 1, 1, 1, 1, 1, -2, 0, 9, 13);
  test_wgrad(1, 9, 13, 128, 128, 1, 3, 1, 1, 1, 5, 0, -5, 9, 13);
  test_wgrad(1, 9, 13, 64, 16, 1, 1, 1, 1, 1, 1, 0, 0, 9, 13);
  test_wgrad(1, 9, 13, 128, 64, 2, 1, 1, 1, 1, 1, 0, 0, 9, 13);
  test_wgrad(2, 10, 14, 16, 48, 3, 3, 2, 2, 1, 1, -1, -1, 5, 7);
  test_wgrad(1, 9, 13, 3, 16, 3, 3, 2, 2, 1, 1, -1, -1, 5, 7);
  test_wgrad(2, 11, 10, 5, 32, 3, 2, 2, 3, 1, 1, 0, -1, 6, 4);
  test_wgrad(1, 10, 14, 32, 16, 2, 2, 2, 2, 1, 1, 0, 0, 5, 7);  // upsample16's kernel gradient
  test_wgrad(1, 8, 12, 13, 80, 3, 3, 1, 1, 2, 2, -2, -2, 8, 12);
  // Rows wider than wgrad_row's chunks of 128 pixels, a tap reaching across chunks.
  test_wgrad(1, 2, 300, 16, 16, 1, 3, 1, 1, 1, 9, 0, -9, 2, 300);
  test_wgrad(1, 3, 301, 16, 32, 3, 3, 2, 2, 1, 1, -1, -1, 2, 151);
  for (int C : {16, 64, 128}) {
    test_channel_sums<false>(301, C);
    test_channel_sums<true>(301, C);
  }
  std::printf("%s: %d of %d cases failed\n", failures ? "FAIL" : "OK", failures, cases);
  return failures ? 1 : 0;
}
