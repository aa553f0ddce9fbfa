"""Every third-party module that the code, the tests and the notebook import is a declared dependency (or is
imported behind an optional guard), so the README's commands work in a fresh virtual environment."""
from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import sys
import tomllib

from tests.conftest import ROOT

PACKAGES = ('srjax', 'train', 'eval', 'configs', 'tests')
NOTEBOOKS = ('eval/notebooks/colab_tpu.ipynb',)
OPTIONAL_ERRORS = {'ImportError', 'ModuleNotFoundError', 'Exception', 'BaseException'}


def _normalise(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def declared() -> set[str]:
  """Distribution names in pyproject's dependencies and its 'test' extra, normalised (PEP 503)."""
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  specs = project['dependencies'] + project['optional-dependencies']['test']
  return {_normalise(re.match(r'[A-Za-z0-9_.\-]+', s).group(0)) for s in specs}


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST], name: str) -> bool:
  """Inside a `try:` body whose handlers catch ImportError (or broader), or under an `if` that tests for the
  module itself (`if 'google.colab' in sys.modules:`, Colab's own module)."""
  child, parent = node, parents.get(node)
  while parent is not None:
    if isinstance(parent, ast.If) and child in parent.body and any(
        isinstance(c, ast.Constant) and c.value == name for c in ast.walk(parent.test)):
      return True
    if isinstance(parent, ast.Try) and child in parent.body:
      for handler in parent.handlers:
        names = ([handler.type] if not isinstance(handler.type, ast.Tuple) else handler.type.elts
                 ) if handler.type is not None else [ast.Name('BaseException')]
        if any(isinstance(n, ast.Name) and n.id in OPTIONAL_ERRORS for n in names):
          return True
    child, parent = parent, parents.get(parent)
  return False


def imports(source: str, where: str) -> list[tuple[str, str, bool]]:
  """(top-level module, location, guarded) for every absolute import in `source`."""
  tree = ast.parse(source)
  parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
      names = [node.module]
    else:
      continue
    for name in names:
      out.append((name.split('.')[0], f'{where}:{node.lineno}', _guarded(node, parents, name)))
  return out


def _sources():
  for package in PACKAGES:
    for dirpath, _, filenames in os.walk(os.path.join(ROOT, package)):
      for f in filenames:
        if f.endswith('.py'):
          path = os.path.join(dirpath, f)
          with open(path) as fh:
            yield os.path.relpath(path, ROOT), fh.read()
  for notebook in NOTEBOOKS:
    with open(os.path.join(ROOT, notebook)) as f:
      cells = json.load(f)['cells']
    for i, cell in enumerate(cells):
      if cell['cell_type'] == 'code':
        code = ''.join(cell['source'])
        code = '\n'.join('' if line.lstrip().startswith(('!', '%')) else line for line in code.splitlines())
        yield f'{notebook}[cell {i}]', code


def test_every_imported_third_party_module_is_declared():
  local = set(PACKAGES) | {os.path.splitext(f)[0] for f in os.listdir(os.path.join(ROOT, 'tests'))}
  distributions = importlib.metadata.packages_distributions()
  wanted = declared()
  missing = []
  for where, source in _sources():
    for module, location, guarded in imports(source, where):
      if module in sys.stdlib_module_names or module in local or module == '__future__' or guarded:
        continue
      dists = {_normalise(d) for d in distributions.get(module, [])}
      if not dists & wanted:
        missing.append(f'{module} ({location}; distribution {sorted(dists) or "not installed"})')
  assert not missing, 'imported but not declared in pyproject.toml:\n' + '\n'.join(sorted(set(missing)))


def test_the_checker_sees_unguarded_and_guarded_imports():
  source = ('import numpy\nfrom a.b import c\ntry:\n  import torch\nexcept ImportError:\n  torch = None\n'
            "if 'g.colab' in sys.modules:\n  from g.colab import drive\nif x:\n  import h\n")
  assert imports(source, 'x') == [('numpy', 'x:1', False), ('a', 'x:2', False), ('torch', 'x:4', True),
                                  ('g', 'x:8', True), ('h', 'x:10', False)]
  assert {'jax', 'pytest'} <= declared()
