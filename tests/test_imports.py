"""The package's imports run one way: no module imports, however late, one that imports it back."""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_graph() -> dict[str, set[str]]:
  """module -> the hebm_jax modules it imports anywhere (top level or inside functions).

  A package's `__init__` importing its own submodules, and a submodule reaching its parent
  package, are left out: they are how a package is built, not a tangle.
  """
  files = {}
  for folder, _, names in os.walk(os.path.join(ROOT, "hebm_jax")):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        files[module.removesuffix(".__init__")] = path

  def known(name: str) -> str:
    while name not in files and "." in name:
      name = name.rsplit(".", 1)[0]
    return name if name in files else ""

  graph = {}
  for module, path in files.items():
    targets = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hebm_jax"):
        targets |= {known(f"{node.module}.{a.name}") for a in node.names}
      elif isinstance(node, ast.Import):
        targets |= {known(a.name) for a in node.names if a.name.startswith("hebm_jax")}
    is_package = path.endswith("__init__.py")
    graph[module] = {t for t in targets if t and t != module
                     and not (is_package and t.startswith(module + "."))
                     and not module.startswith(t + ".")}
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while not component or component[-1] != v:
        component.append(stack.pop())
        on_stack.discard(component[-1])
      if len(component) > 1:
        found.append(sorted(component))

  for v in graph:
    if v not in index:
      visit(v)
  return found


def test_no_import_cycles():
  assert cycles(import_graph()) == []


def test_the_cycle_check_sees_a_cycle():
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_training_and_evaluation_sit_below_the_entry_points():
  graph = import_graph()
  upper = {"hebm_jax.train", "hebm_jax.generate", "hebm_jax.sweep"}
  for module, targets in graph.items():
    if module.startswith("hebm_jax.evaluation"):
      assert not targets & upper, (module, targets & upper)
  for module in ("hebm_jax.train_state", "hebm_jax.train_step", "hebm_jax.prior_samples"):
    assert not graph[module] & (upper | {"hebm_jax.evaluation"}), (module, graph[module])
