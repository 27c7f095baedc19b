"""esnet_jax.system.xla_flags: the default XLA CPU flags, never over the user's, and the opt-out."""

from __future__ import annotations

import os

import jax
import pytest

from esnet_jax.system import xla_flags


@pytest.mark.parametrize(
    'environ, expected',
    [
        ({}, ' '.join(xla_flags.DEFAULT_CPU_FLAGS)),
        (
            {'XLA_FLAGS': '--xla_dump_to=/tmp/d'},
            ' '.join(('--xla_dump_to=/tmp/d',) + xla_flags.DEFAULT_CPU_FLAGS),
        ),
        ({xla_flags.OPT_OUT_ENV: '0'}, ' '.join(xla_flags.DEFAULT_CPU_FLAGS)),
    ],
)
def test_default_flags_are_appended(environ, expected):
  added = xla_flags.add_default_flags(environ)
  assert environ['XLA_FLAGS'] == expected
  assert added == list(xla_flags.DEFAULT_CPU_FLAGS)


def test_default_flags_never_override_the_users():
  user = ' '.join(f'{flag.split("=")[0]}=USER' for flag in xla_flags.DEFAULT_CPU_FLAGS)
  environ = {'XLA_FLAGS': user}
  assert xla_flags.add_default_flags(environ) == []
  assert environ['XLA_FLAGS'] == user


def test_default_flags_opt_out():
  environ = {xla_flags.OPT_OUT_ENV: '1', 'XLA_FLAGS': '--xla_dump_to=/tmp/d'}
  assert xla_flags.add_default_flags(environ) == []
  assert environ == {xla_flags.OPT_OUT_ENV: '1', 'XLA_FLAGS': '--xla_dump_to=/tmp/d'}


def test_no_flags_added_once_the_backend_runs(monkeypatch):
  jax.numpy.ones(2).block_until_ready()  # XLA has read XLA_FLAGS now.
  monkeypatch.setenv('XLA_FLAGS', '')
  monkeypatch.delenv(xla_flags.OPT_OUT_ENV, raising=False)
  assert xla_flags.apply_default_xla_flags() == []
  assert os.environ['XLA_FLAGS'] == ''
