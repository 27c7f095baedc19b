"""The package's layering (docs/architecture.md): subpackages by role, each importing only
those below it; no import circle between modules; the top level holds the commands."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / 'esnet_jax'
ARCHITECTURE = REPO / 'docs' / 'architecture.md'

# Bottom to top: a module may import its own subpackage's modules and those of the layers
# before its own, never one after. `errors` is the error family under everything; the
# top level (`esnet_jax.X`, the commands) sits over everything.
LAYERS = (
    'errors',
    'system',
    'kernels',
    'model',
    'data',
    'weights',
    'deploy',
    'config',
    'inference',
    'evaluation',
    'training',
    'browser_demo',
    'benchmarking',
    'commands',
)
COMMANDS = {
    'benchmark',
    'convert',
    'demo',
    'export',
    'layer_timing',
    'main',
    'onnx_eval',
    'plots',
    'predict',
}


def _module_name(path: Path) -> str:
  parts = path.relative_to(REPO).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
  """The package modules `path` imports anywhere: at the top, inside functions (lazily)
  and under `if __name__ == '__main__'` alike."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from pkg import sub` imports the submodule, not a circle through pkg's __init__.
      names = [
          f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in modules else node.module
          for a in node.names
      ]
    else:
      continue
    found |= {n for n in names if n in modules}
  return found - {_module_name(path)}


def _modules() -> dict[str, Path]:
  return {_module_name(p): p for p in PACKAGE.rglob('*.py') if 'node_modules' not in p.parts}


def _graph() -> dict[str, set[str]]:
  paths = _modules()
  modules = set(paths)
  return {name: _imports(path, modules) for name, path in paths.items()}


def _layer(module: str) -> str:
  parts = module.split('.')[1:]
  if not parts or (len(parts) == 1 and parts[0] in COMMANDS):
    return 'commands'
  return parts[0]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt) :] + [nxt]
      if nxt not in state and (found := visit(nxt)):
        return found
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state and (found := visit(node)):
      return found
  return None


def test_the_graph_sees_the_package_imports():
  graph = _graph()
  assert 'esnet_jax.weights.convert' in graph['esnet_jax.weights.resolver']
  assert 'esnet_jax.model.esnet' in graph['esnet_jax.model.implementations']
  # A lazy import inside a function counts.
  assert 'esnet_jax.deploy.export' in graph['esnet_jax.deploy.engines.artifacts']


def test_the_circle_check_finds_a_circle():
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert _cycle({'a': {'b'}, 'b': set()}) is None


def test_no_import_circle_between_the_package_modules():
  """Lazy imports inside functions and `__main__` guards count too: a circle is one
  however it is spelt."""
  assert _cycle(_graph()) is None, ' -> '.join(_cycle(_graph()))


def test_the_top_level_holds_the_commands_and_the_error_family():
  top = {p.stem for p in PACKAGE.glob('*.py')} - {'__init__'}
  assert top == COMMANDS | {'errors'}
  folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / '__init__.py').exists()}
  assert folders == set(LAYERS) - {'errors', 'commands'}
  for name in COMMANDS:
    text = (PACKAGE / f'{name}.py').read_text()
    assert "if __name__ == '__main__':" in text, name
    assert len(text.splitlines()) <= 250, f'{name}.py: a command is a parser and a call'


def test_each_subpackage_imports_only_those_below_it():
  wrong = []
  for module, imports in _graph().items():
    layer = LAYERS.index(_layer(module))
    for imported in imports:
      if LAYERS.index(_layer(imported)) > layer:
        wrong.append(f'{module} -> {imported}')
  assert not wrong, 'imports upward: ' + ', '.join(sorted(wrong))


def test_the_layer_check_sees_an_upward_import():
  assert LAYERS.index(_layer('esnet_jax.model.esnet')) < LAYERS.index(
      _layer('esnet_jax.training.trainer')
  )
  assert _layer('esnet_jax.predict') == 'commands' and _layer('esnet_jax') == 'commands'
  assert _layer('esnet_jax.errors') == 'errors'


def _shown_as(path: Path) -> str:
  """How docs/architecture.md names a module: its path under esnet_jax/ (`model/esnet.py`),
  a package by its folder (`deploy/engines/`)."""
  rel = path.relative_to(PACKAGE).as_posix()
  return rel[: -len('__init__.py')] if rel.endswith('__init__.py') else rel


def test_every_module_appears_in_docs_architecture():
  text = ARCHITECTURE.read_text()
  missing = [
      _shown_as(path)
      for module, path in _modules().items()
      if module != 'esnet_jax' and f'`{_shown_as(path)}`' not in text
  ]
  assert not missing, 'docs/architecture.md does not show: ' + ', '.join(sorted(missing))


def test_only_main_and_the_train_step_runner_import_the_trainer():
  importers = {
      name for name, imports in _graph().items() if 'esnet_jax.training.trainer' in imports
  }
  assert importers == {'esnet_jax.main', 'esnet_jax.benchmarking.runners'}


def _callers(function: str) -> set[str]:
  """The package modules that call `function` (by its bare or dotted name)."""
  found = set()
  for module, path in _modules().items():
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Call):
        callee = node.func.attr if isinstance(node.func, ast.Attribute) else None
        callee = callee or (node.func.id if isinstance(node.func, ast.Name) else None)
        if callee == function:
          found.add(module)
  return found


def test_one_builder_of_the_deployed_network():
  """BatchNorm is folded, and the implementation picked, in `deployed.deployed_network`
  only (training builds its own, unfolded network in `trainer.create_model`)."""
  assert _callers('fold_batch_norm') == {'esnet_jax.model.deployed'}
  assert _callers('esnet') == {'esnet_jax.model.deployed', 'esnet_jax.training.trainer'}
  assert _callers('deployed_network') >= {
      'esnet_jax.inference.segmenter',
      'esnet_jax.deploy.engines.jax_engine',
      'esnet_jax.deploy.export',
      'esnet_jax.deploy.onnx_graph',
      'esnet_jax.benchmarking.layer_timing',
      'esnet_jax.benchmarking.runners',
  }


def test_one_builder_of_the_pytorch_network_from_flax_variables():
  assert _callers('flax_to_torch') == {
      'esnet_jax.weights.torch_reference',
      'esnet_jax.weights.resolver',
  }


def test_no_function_of_the_layers_runs_over_80_lines():
  """Library functions stay small (the commands' argument parsers are lists of flags)."""
  long = []
  for module, path in _modules().items():
    if _layer(module) == 'commands':
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > 80:
          long.append(f'{module}.{node.name} ({lines} lines)')
  assert not long, ', '.join(long)


def test_the_public_api_resolves_lazily_and_is_documented():
  import esnet_jax  # pylint: disable=g-import-not-at-top

  text = ARCHITECTURE.read_text()
  for name in esnet_jax.__all__:
    assert getattr(esnet_jax, name) is not None
    assert f'`esnet_jax.{name}`' in text, f'docs/architecture.md does not name esnet_jax.{name}'
