"""The package's shape, as a maintainer checks it: every module says what it is, imports form no
circle, and no module imports one of a higher layer (the data flow runs one way)."""

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'fcos_jax')

# Lower layers never import higher ones. A module is ranked by its longest listed prefix.
LAYERS = (
    ('fcos_jax', 'fcos_jax.errors', 'fcos_jax.trees', 'fcos_jax.configs'),
    ('fcos_jax.points', 'fcos_jax.normalize', 'fcos_jax.sharding', 'fcos_jax.barriers',
     'fcos_jax.image_io',
     'fcos_jax.video_io', 'fcos_jax.visualize', 'fcos_jax.models', 'fcos_jax.data.categories',
     'fcos_jax.data.preprocessing', 'fcos_jax.data.sizes', 'fcos_jax.exporters.contract'),
    ('fcos_jax.targets', 'fcos_jax.losses', 'fcos_jax.postprocess', 'fcos_jax.tta',
     'fcos_jax.optim', 'fcos_jax.ema',
     'fcos_jax.data', 'fcos_jax.exporters'),
    ('fcos_jax.train_step', 'fcos_jax.inference', 'fcos_jax.weights',
     'fcos_jax.configs.recorded'),
    ('fcos_jax.evaluation', 'fcos_jax.serving'),
    ('fcos_jax.analysis', 'fcos_jax.train_log', 'fcos_jax.train_programs',
     'fcos_jax.preemption', 'fcos_jax.trackers', 'fcos_jax.best_checkpoint',
     'fcos_jax.configs.validate', 'fcos_jax.workdir_lock'),
    ('fcos_jax.trainer',),
    ('fcos_jax.programs', 'fcos_jax.tools'),
)
# Entry-point aliases: modules whose only code runs a program under `python -m`.
ALIASES = ('fcos_jax.data.convert_coco', 'fcos_jax.tools.import_torchvision',
           'fcos_jax.tools.assigner_stats')


def _modules():
  out = {}
  for root, _, files in os.walk(ROOT):
    for f in files:
      if f.endswith('.py'):
        path = os.path.join(root, f)
        rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, '.')
        out[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = path
  return out


MODULES = _modules()


def _is_main_guard(node) -> bool:
  return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and
          getattr(node.test.left, 'id', None) == '__name__')


def _imports(path: str):
  """fcos_jax modules imported anywhere in the module (functions included), except under
  `if __name__ == '__main__'`, where a module runs as a program."""
  tree = ast.parse(open(path).read())
  found = set()

  def visit(node):
    if _is_main_guard(node):
      return
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      for a in node.names:  # `from pkg import module` imports the module
        sub = f'{node.module}.{a.name}'
        found.add(sub if sub in MODULES else node.module)
    for child in ast.iter_child_nodes(node):
      visit(child)
  visit(tree)
  return {m for m in found if m in MODULES}


GRAPH = {m: _imports(p) - {m} for m, p in MODULES.items()}


def _rank(module: str) -> int:
  best, rank = '', None
  for r, prefixes in enumerate(LAYERS):
    for p in prefixes:
      if (module == p or module.startswith(p + '.')) and len(p) > len(best):
        best, rank = p, r
  return rank


def test_every_module_says_what_it_is():
  for module, path in MODULES.items():
    doc = ast.get_docstring(ast.parse(open(path).read()))
    assert doc and doc.strip(), f'{module} has no docstring'


def test_no_import_circle():
  state = {}

  def visit(m, stack):
    state[m] = 'open'
    for n in sorted(GRAPH[m]):
      if state.get(n) == 'open':
        raise AssertionError('import circle: ' + ' -> '.join(stack[stack.index(n):] + [n]))
      if n not in state:
        visit(n, stack + [n])
    state[m] = 'done'
  for m in sorted(GRAPH):
    if m not in state:
      visit(m, [m])


def test_no_arrow_up_a_layer():
  unranked = sorted(m for m in MODULES if _rank(m) is None)
  assert not unranked, f'modules in no layer of tests/test_structure.py: {unranked}'
  up = [f'{m} (layer {_rank(m)}) imports {n} (layer {_rank(n)})'
        for m in sorted(MODULES) if m not in ALIASES
        for n in sorted(GRAPH[m]) if _rank(n) > _rank(m)]
  assert not up, '; '.join(up)


def test_aliases_only_run_their_program():
  for alias in ALIASES:
    tree = ast.parse(open(MODULES[alias]).read())
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and
                                         isinstance(n.value, ast.Constant))]
    assert len(body) == 1 and _is_main_guard(body[0]), alias
