"""An exported ONNX file and its `FILE.json`, read and checked against each other before any work.

`esnet_jax.deploy.export` writes `FILE.onnx` and `FILE.onnx.json` (the input/output contract: class
count, layout, normalisation, symbolic dimensions). Tools that take such a file (onnx_eval,
the browser demo) trust the JSON for what the graph does not say (mean, std, class names);
what the graph does say (its input layout, its class count, a fixed height and width) is
read from the graph itself and must agree with the JSON. A JSON that says 8 classes beside
a graph with 11 outputs would otherwise give a silently wrong mIoU or a page with wrong
colours.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from esnet_jax.errors import OptionError

# Keys every export JSON has, and what each must be.
_REQUIRED = {
    'num_classes': 'a positive integer',
    'mean': 'three numbers',
    'std': 'three positive numbers',
}


@dataclasses.dataclass(frozen=True)
class Export:
  """An ONNX export whose graph and JSON agree.

  `height` and `width` are the graph's fixed input size, None where symbolic.
  """

  path: Path
  meta: dict[str, Any]
  num_classes: int
  height: int | None
  width: int | None

  @property
  def fixed_size(self) -> tuple[int, int] | None:
    if self.height is None or self.width is None:
      return None
    return self.height, self.width


def _dims(value_info: Any) -> list[int | str | None]:
  """A graph input's or output's shape: ints for fixed sides, names or None for symbolic ones."""
  dims = []
  for d in value_info.type.tensor_type.shape.dim:
    if d.HasField('dim_value'):
      dims.append(int(d.dim_value))
    else:
      dims.append(d.dim_param or None)
  return dims


def _read_meta(json_path: Path, option: str, model: Path) -> dict[str, Any]:
  if not json_path.is_file():
    raise OptionError(
        option,
        str(model),
        f'an export of esnet_jax.deploy.export, with its {json_path.name} beside it',
    )
  try:
    meta = json.loads(json_path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise OptionError(
        option, str(model), f'its {json_path} to hold the JSON esnet_jax.deploy.export wrote ({e})'
    ) from None
  if not isinstance(meta, dict):
    raise OptionError(option, str(model), f'its {json_path} to hold a JSON object')
  checks = {
      'num_classes': lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
      'mean': lambda v: _numbers(v),
      'std': lambda v: _numbers(v) and all(x > 0 for x in v),
  }
  for key, ok in checks.items():
    if key not in meta or not ok(meta[key]):
      raise OptionError(
          option,
          str(model),
          f'{json_path} to give {key!r} as {_REQUIRED[key]}, not {meta.get(key)!r}',
      )
  return meta


def _numbers(value: Any) -> bool:
  return (
      isinstance(value, list)
      and len(value) == 3
      and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
  )


def read_export(model: str | os.PathLike[str], option: str = 'model') -> Export:
  """The export at MODEL, its JSON read and checked against the graph.

  Raises:
    OptionError: MODEL is missing or not an ONNX file, its JSON is missing or malformed,
      or the two disagree on the class count or input layout (named as OPTION).
    ImportError: the `onnx` package is missing (the `export` extra).
  """
  model = Path(model)
  if not model.is_file():
    raise OptionError(option, str(model), 'an existing .onnx file of esnet_jax.deploy.export')
  json_path = model.with_name(model.name + '.json')
  meta = _read_meta(json_path, option, model)
  try:
    import onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('reading an ONNX export needs onnx: pip install "esnet-jax[export]"') from e
  try:
    graph = onnx.load(str(model), load_external_data=False).graph
  except Exception as e:  # pylint: disable=broad-except  # protobuf's DecodeError and others.
    raise OptionError(option, str(model), f'an ONNX file ({type(e).__name__}: {e})') from None
  if len(graph.input) != 1 or len(graph.output) != 1:
    raise OptionError(option, str(model), 'a graph of one input and one output, as export writes')
  inputs, outputs = _dims(graph.input[0]), _dims(graph.output[0])
  if len(inputs) != 4 or inputs[3] != 3:
    raise OptionError(
        option, str(model), f'an NHWC RGB input (batch, H, W, 3), not of shape {inputs}'
    )
  if len(outputs) != 4 or not isinstance(outputs[3], int):
    raise OptionError(
        option, str(model), f'logits (batch, H, W, classes) as output, not of shape {outputs}'
    )
  if outputs[3] != meta['num_classes']:
    raise OptionError(
        option,
        str(model),
        f'a graph and JSON that agree: the graph gives {outputs[3]} classes, '
        f'{json_path.name} says {meta["num_classes"]}',
    )
  height, width = (v if isinstance(v, int) else None for v in inputs[1:3])
  for side, size in (('height', height), ('width', width)):
    declared = meta.get('input', {}).get('shape', [None] * 4)
    if isinstance(declared, list) and len(declared) == 4:
      said = declared[1 if side == 'height' else 2]
      said = said if isinstance(said, int) else None
      if said != size:
        raise OptionError(
            option,
            str(model),
            f'a graph and JSON that agree: the graph\'s {side} is {size or "symbolic"}, '
            f'{json_path.name} says {said or "symbolic"}',
        )
  return Export(model, meta, outputs[3], height, width)
