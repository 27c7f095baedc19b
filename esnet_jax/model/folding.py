"""Inference-time BatchNorm folding for ESNet.

In eval mode every BatchNorm is a per-channel affine map that directly follows a
convolution (in the PFCU, one BatchNorm follows three convolutions), so it can be
merged into that convolution's kernel and bias. Only the max-pooled half of a
DownsamplerBlock has no conv in front; it keeps a per-channel scale and shift.
The result is the parameter tree of `ESNet(..., bn_folded=True)`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

# Which convolutions of a module each of its BatchNorms follows.
_BN_FOLLOWS = {
    'bn': ('conv',),
    'bn1': ('conv1x3_1',),
    'bn2': ('conv1x3_2', 'conv1x3_22', 'conv1x3_25', 'conv1x3_29'),
}


def _fold_module(
    params: Mapping[str, Any], stats: Mapping[str, Any], epsilon: float
) -> dict[str, Any]:
  out: dict[str, Any] = {}
  folded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
  for name, child in params.items():
    if name in _BN_FOLLOWS and name in stats and 'scale' in child:
      scale = np.asarray(child['scale'], np.float64) / np.sqrt(
          np.asarray(stats[name]['var'], np.float64) + epsilon
      )
      shift = np.asarray(child['bias'], np.float64) - np.asarray(stats[name]['mean']) * scale
      folded[name] = (scale, shift)
    elif isinstance(child, Mapping) and 'kernel' not in child:
      out[name] = _fold_module(child, stats.get(name, {}), epsilon)
    else:
      out[name] = {k: np.asarray(v, np.float32) for k, v in child.items()}
  for bn_name, (scale, shift) in folded.items():
    convs = [c for c in _BN_FOLLOWS[bn_name] if c in out]
    if not convs:
      raise ValueError(f'BatchNorm {bn_name!r} has no convolution in front of it to fold into.')
    for conv_name in convs:
      conv = out[conv_name]
      n = conv['kernel'].shape[-1]
      out[conv_name] = {
          'kernel': (conv['kernel'] * scale[:n]).astype(np.float32),
          'bias': (conv['bias'] * scale[:n] + shift[:n]).astype(np.float32),
      }
      if n < scale.shape[0]:  # DownsamplerBlock: the pooled channels come after the conv's.
        out['pool_scale'] = scale[n:].astype(np.float32)
        out['pool_bias'] = shift[n:].astype(np.float32)
  return out


def fold_batch_norm(variables: Mapping[str, Any], epsilon: float = 1e-3) -> dict[str, Any]:
  """`{'params', 'batch_stats'}` of `ESNet` -> `{'params'}` of `ESNet(bn_folded=True)`."""
  return {'params': _fold_module(variables['params'], variables.get('batch_stats', {}), epsilon)}
