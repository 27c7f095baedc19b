"""Settings as frozen objects checked once when made: the first bad field raises
`OptionError` (exit status 2), re-raised in the name its user gave it, the command line's
flag or the config's key (`ConfigError`, status 1). Each tool's options class builds on
these (`esnet_jax.config.options`, `esnet_jax.deploy.export_options`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from esnet_jax.errors import ConfigError, OptionError

WHICH = ('latest', 'best')  # a workdir's checkpoint: its latest or its best


def choice(field: str, value: Any, allowed: tuple[Any, ...]) -> tuple[str, bool, str]:
  """The check that `value` is one of `allowed`, as `_checks` lists them."""
  return (field, value in allowed, 'one of ' + ', '.join(allowed))


def positive_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value > 0


def multiple_of_8(value: Any) -> bool:
  return positive_int(value) and value % 8 == 0


def scales_ok(scales: Any) -> bool:
  """Positive, finite floats: `inf` would fail in every image's resize, NaN silently."""
  return (
      isinstance(scales, tuple)
      and len(scales) > 0
      and all(isinstance(s, float) and math.isfinite(s) and s > 0 for s in scales)
  )


SCALES_EXPECTED = 'a non-empty list of positive, finite scales'
SIZE_EXPECTED = (
    'a positive multiple of 8 (ESNet has three stride-2 stages: H and W must be multiples of 8)'
)


class Checked:
  """Runs `_checks()` when a dataclass below is made; the first that fails raises `OptionError`."""

  def __post_init__(self) -> None:
    for field, ok, expected in self._checks():
      if not ok:
        raise OptionError(field, getattr(self, field), expected)

  def _checks(self) -> list[tuple[str, bool, str]]:
    """(field, whether its value can work, what would) for every check of the object."""
    raise NotImplementedError


def build_checked(
    cls: type, fields: Mapping[str, Any], names: Mapping[str, str], config: bool
) -> Any:
  """`cls(**fields)`; a bad field re-raised in its source's name: the command line's flag
  (`OptionError`, exit status 2) or the config's key (`ConfigError`, status 1)."""
  try:
    return cls(**fields)
  except OptionError as e:
    name = names.get(e.field, e.field)
    if config:
      raise ConfigError(f'{name}={e.value!r}: expected {e.expected}.') from None
    raise OptionError(name, e.value, e.expected) from None


def flag_names(cls: type, renamed: Mapping[str, str] | None = None) -> dict[str, str]:
  """Each field's command-line flag: `--field-name` unless `renamed` says otherwise."""
  return {
      f.name: (renamed or {}).get(f.name, '--' + f.name.replace('_', '-'))
      for f in dataclasses.fields(cls)
  }
