"""ESNet semantic segmentation in JAX/Flax.

The public Python API, importable from `esnet_jax` itself (each loaded on first use, so
`import esnet_jax` stays light); everything else is internal and may move:

- `Segmenter`: trained weights to class maps on any engine (`esnet_jax.inference.segmenter`);
- `ESNet`: the Flax network (`esnet_jax.model.esnet`);
- `deployed_network`: the network inference runs, BatchNorm folded (`esnet_jax.model.deployed`);
- `load_weights`: any weights source (`pretrained:NAME`, a workdir, an orbax step, PyTorch
  weights files) to variables and their metadata (`esnet_jax.weights.resolver.load`);
- `build_engine`: an inference engine from variables (`esnet_jax.deploy.engines.build`);
- `EsnetError` and its family (`esnet_jax.errors`).
"""

from __future__ import annotations

import importlib
from typing import Any

from esnet_jax.system import xla_flags as _xla_flags

_xla_flags.apply_default_xla_flags()

__version__ = '0.1.0'

_PUBLIC = {
    'Segmenter': ('esnet_jax.inference.segmenter', 'Segmenter'),
    'ESNet': ('esnet_jax.model.esnet', 'ESNet'),
    'deployed_network': ('esnet_jax.model.deployed', 'deployed_network'),
    'load_weights': ('esnet_jax.weights.resolver', 'load'),
    'build_engine': ('esnet_jax.deploy.engines', 'build'),
    'EsnetError': ('esnet_jax.errors', 'EsnetError'),
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
  """The public names, imported on first use."""
  if name not in _PUBLIC:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  module, attribute = _PUBLIC[name]
  return getattr(importlib.import_module(module), attribute)


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_PUBLIC))
