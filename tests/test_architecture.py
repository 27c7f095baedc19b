"""The package's layering (docs/architecture.md): no import circle between its modules."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / 'esnet_jax'


def _module_name(path: Path) -> str:
  parts = path.relative_to(REPO).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
  """The package modules `path` imports anywhere but under `if __name__ == '__main__'`."""
  tree = ast.parse(path.read_text())
  skip = {
      id(node)
      for top in tree.body
      if isinstance(top, ast.If) and '__name__' in ast.unparse(top.test)
      for node in ast.walk(top)
  }
  found = set()
  for node in ast.walk(tree):
    if id(node) in skip:
      continue
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


def _graph() -> dict[str, set[str]]:
  paths = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
  modules = set(paths)
  return {name: _imports(path, modules) for name, path in paths.items()}


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
  assert 'esnet_jax.convert' in graph['esnet_jax.weights']
  assert 'esnet_jax.models' in graph['esnet_jax.implementations']


def test_no_import_circle_between_the_package_modules():
  """Lazy imports inside functions count too: a circle is one however it is spelt."""
  assert _cycle(_graph()) is None, ' -> '.join(_cycle(_graph()))


def test_only_main_and_the_train_step_runner_import_train():
  importers = {name for name, imports in _graph().items() if 'esnet_jax.train' in imports}
  assert importers == {'esnet_jax.main', 'esnet_jax.benchmarking.runners'}


def _callers(function: str) -> set[str]:
  """The package modules that call `function` (by its bare or dotted name)."""
  found = set()
  for path in PACKAGE.rglob('*.py'):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Call):
        callee = node.func.attr if isinstance(node.func, ast.Attribute) else None
        callee = callee or (node.func.id if isinstance(node.func, ast.Name) else None)
        if callee == function:
          found.add(_module_name(path))
  return found


def test_one_builder_of_the_deployed_network():
  """BatchNorm is folded, and the implementation picked, in `deployed.deployed_network`
  only (training builds its own, unfolded network in `train.create_model`)."""
  assert _callers('fold_batch_norm') == {'esnet_jax.deployed'}
  assert _callers('esnet') == {'esnet_jax.deployed', 'esnet_jax.train'}
  assert _callers('deployed_network') >= {
      'esnet_jax.inference',
      'esnet_jax.engines.jax_engine',
      'esnet_jax.export',
      'esnet_jax.onnx_graph',
      'esnet_jax.layer_timing',
      'esnet_jax.benchmarking.runners',
  }


def test_one_builder_of_the_pytorch_network_from_flax_variables():
  assert _callers('flax_to_torch') == {'esnet_jax.torch_reference', 'esnet_jax.weights'}
