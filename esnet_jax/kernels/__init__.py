"""ESNet's CPU kernels: compiled C++ called through XLA's FFI, where XLA:CPU's own
operations lose to oneDNN and MLAS on this network.

- `cpu/kernels.h`: the kernels, portable C++ (see its header for the SIMD design);
  `cpu/kernels.cc` binds them to XLA's FFI, `cpu/selftest.cc` checks them against
  scalar loops without XLA (natively and, in the tests, for aarch64 under qemu);
- `build`: compiling, loading and registering them (`available()`, `cpu_isa()`);
- `ops`: each kernel as a JAX function beside its XLA reference, chosen per
  platform at lowering, with the `custom_vjp`s training needs.

One source serves AVX-512, AVX2+FMA and ARM NEON: the kernels are written in GCC/Clang
vector extensions over the machine's native float vector (16, 8 or 4 lanes), so the
compiler emits the ISA's FMAs, broadcasts and unaligned moves, and only the shape of
the register blocks (pixels x output-channel vectors held in registers) changes per
ISA, as compile-time constants: AVX2 has 16 registers of 8 floats, AVX-512 and NEON 32
of 16 and 4. No SIMD library to install (highway would do the same as a dependency),
no per-ISA intrinsics to keep in step. At 32+ channels the 3- and 5-tap convolutions
use Winograd F(2, k) (k + 1 matrix products per output pair instead of 2k), since the
direct tiles already run at the FMA units' peak. `build` compiles with explicit flags per ISA
(`-mavx512f -mfma`, `-mavx2 -mfma`, aarch64's default) on first use, or ahead of time
with `python -m esnet_jax.kernels.build`; other CPUs use XLA's operations.

bfloat16 (`dtype=bfloat16`): on CPUs with AVX512_BF16 (AMD Zen 4 and later, Intel
Sapphire Rapids and later) the build adds `-mavx512bf16` and the convolutions multiply
with bf16 dot products, accumulating in float32, parameters float32; elsewhere
`esnet_jax.model.implementations` computes bfloat16 requests in float32, which is faster there
than XLA's bfloat16.

The model never imports this package: `esnet_jax.model.implementations` builds the
model's parts from one setting ('auto' | 'xla' | 'native').
"""
