"""ESNet semantic segmentation in JAX/Flax."""

from esnet_jax import xla_flags as _xla_flags

_xla_flags.apply_default_xla_flags()

__version__ = "0.1.0"
