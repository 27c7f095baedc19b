"""Default XLA flags that make ESNet fast on CPU, applied when `esnet_jax` is imported.

XLA reads `XLA_FLAGS` once, when JAX initialises its backend, so the flags are
appended to the environment variable at package import time, before any
computation runs. A flag the user already set (same name in `XLA_FLAGS`) is
never overridden, and `ESNET_JAX_NO_DEFAULT_XLA_FLAGS=1` turns the defaults off.
The flags only configure the XLA:CPU compiler; other backends ignore them.

Why this flag (`python -m esnet_jax.benchmark --compare-torch`, 2 CPU cores,
1024x512, float32, jaxlib 0.10.2; the README's benchmark table): by default
jaxlib hands most of ESNet's convolutions (all but the 16-channel ones) to
YNNPACK fusions, which are slower than XLA's own (Eigen) kernels on its
factorised kx1/1xk convolutions. `--xla_cpu_experimental_ynn_fusion_type=` (empty: no YNNPACK
fusions) cuts the median latency from 506 to 357 ms at batch 1 and from 2351 to
1546 ms at batch 4. Other XLA:CPU flags tried made no measurable difference:
`xla_cpu_enable_concurrency_optimized_scheduler`, `xla_cpu_prefer_vector_width=512`,
`xla_cpu_enable_fast_min_max`, `xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME`;
`xla_cpu_use_fusion_emitters=false` and YNNPACK dot/elementwise fusions were
slower, and the oneDNN fusions fail to compile these dots. Also tried on the
convolutions themselves (a 16-, 64- and 128-channel FCU timed alone, 2026-11-24):
`xla_cpu_experimental_{ynn,xnn,onednn}_fusion_type=individual_convolution`,
`xla_cpu_use_onednn=true`, `xla_cpu_experimental_xnn_graph_fusion_mode=
XNN_GRAPH_FUSION_MODE_GREEDY` and `xla_cpu_multi_thread_eigen=false`: no change
or slower (YNNPACK doubles the 64-channel units); no flag of this jaxlib routes
convolutions to oneDNN. `xla_disable_hlo_passes=tree_reduction_rewriter` makes
the train step slower (3.3 instead of 2.6 s at 360x480, batch 4).
"""

from __future__ import annotations

import os
import sys
from typing import MutableMapping

DEFAULT_CPU_FLAGS: tuple[str, ...] = ('--xla_cpu_experimental_ynn_fusion_type=',)
OPT_OUT_ENV = 'ESNET_JAX_NO_DEFAULT_XLA_FLAGS'


def _flag_name(token: str) -> str:
  """'--xla_foo=bar' -> 'xla_foo'."""
  return token.lstrip('-').split('=', 1)[0]


def _append_flags(environ: MutableMapping[str, str], flags: tuple[str, ...]) -> list[str]:
  """Append to `environ['XLA_FLAGS']` each of `flags` whose name is not set yet."""
  current = environ.get('XLA_FLAGS', '').split()
  present = {_flag_name(token) for token in current}
  added = [flag for flag in flags if _flag_name(flag) not in present]
  if added:
    environ['XLA_FLAGS'] = ' '.join(current + added)
  return added


def add_default_flags(
    environ: MutableMapping[str, str], flags: tuple[str, ...] = DEFAULT_CPU_FLAGS
) -> list[str]:
  """Append `flags` to `environ['XLA_FLAGS']`, skipping any whose name is already set.

  Does nothing when `environ[OPT_OUT_ENV]` is set to anything but '' or '0'.
  Returns the flags that were added.
  """
  if environ.get(OPT_OUT_ENV, '') not in ('', '0'):
    return []
  return _append_flags(environ, flags)


def _backend_initialized() -> bool:
  """True once JAX has created its backends (then XLA_FLAGS is no longer read)."""
  if 'jax' not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):  # Private API; assume not yet initialised.
    return False


def apply_default_xla_flags() -> list[str]:
  """Add the default flags to `os.environ` if JAX has not initialised its backend yet.

  Called from `esnet_jax/__init__.py`. When the backend already exists (JAX ran
  a computation before `esnet_jax` was imported) the environment is left
  alone, so that `XLA_FLAGS` keeps describing the flags actually in force.
  """
  if _backend_initialized():
    return []
  return add_default_flags(os.environ)


def request_flags(flags: tuple[str, ...]) -> list[str]:
  """Add `flags` (ones the user has not set) to `os.environ['XLA_FLAGS']` while XLA can still read them.

  For flags a command needs whatever the defaults (e.g. the profiler's op
  names for `benchmark --trace`). Returns the flags added: none once JAX's
  backend exists.
  """
  if _backend_initialized():
    return []
  return _append_flags(os.environ, flags)
