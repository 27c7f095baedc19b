"""Command line entry point: `python -m esnet_jax.main --config configs/NAME.py --workdir DIR`.

Parses flags, joins the multi-host runtime when asked to, and hands the config
to the function for `config.mode`. Override any config field on the command
line, e.g. `--config.num_train_steps=2000 --config.dataset.root=/data/camvid`.
"""

from __future__ import annotations

import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from esnet_jax.system import runner

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (configs/*.py).', lock_config=True
)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_string(
    'coordinator_address',
    None,
    'Multi-host: host:port of process 0, passed to jax.distributed.initialize.',
)
flags.DEFINE_integer('num_processes', None, 'Multi-host: total number of processes.')
flags.DEFINE_integer('process_id', None, 'Multi-host: index of this process.')
flags.DEFINE_bool(
    'distributed',
    False,
    'Call jax.distributed.initialize() with auto-detection (SLURM, ...), '
    'for clusters that set the environment for it.',
)
flags.mark_flags_as_required(['config', 'workdir'])


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with an unknown `--config.KEY` reported in one line."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {e}\nPass --helpshort to see the flags.')
  except (AttributeError, KeyError) as e:  # config_flags: an override of a missing key.
    message = str(e)
    key = re.search(r'(\w+)', message)
    hint = re.search(r'Did you mean "(\w+)"', message)
    overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
    sys.exit(
        f'error: unknown config key {key.group(1) if key else message!r} among '
        f'{" ".join(overrides)}'
        + (
            f'; did you mean "{hint.group(1)}"?'
            if hint
            else '; see the config file for the valid keys.'
        )
    )


def _initialize_distributed() -> None:
  import jax

  explicit = FLAGS.coordinator_address is not None
  if not (explicit or FLAGS.distributed):
    return
  # CPU processes need gloo for cross-process collectives; GPU backends ignore it.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if explicit:
    jax.distributed.initialize(
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
    )
  else:
    jax.distributed.initialize()


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.config.mode == 'train':  # Before JAX starts its threads.
    from esnet_jax.system import host_memory

    host_memory.keep_freed_memory()
  from esnet_jax.benchmarking import suite
  from esnet_jax.deploy import export
  from esnet_jax.inference import predict
  from esnet_jax.training import trainer
  from esnet_jax.errors import ConfigError, EsnetError

  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Progress goes to stdout; keep INFO chatter off.
  _initialize_distributed()
  config = FLAGS.config
  run = {
      'train': trainer.train_and_evaluate,
      'eval': trainer.evaluate_checkpoint,
      'predict': predict.predict_from_config,
      'benchmark': suite.benchmark_from_config,
      'export': export.export_from_config,
  }
  try:
    if config.mode not in run:
      raise ConfigError(f'config.mode={config.mode!r}: expected one of {", ".join(run)}.')
    run[config.mode](config, FLAGS.workdir)
  except EsnetError as e:  # One line and the error's status, before absl sees it.
    raise runner.Failure(str(e), e.exit_status) from e


if __name__ == '__main__':
  runner.run(lambda: app.run(main, flags_parser=_parse_flags))
