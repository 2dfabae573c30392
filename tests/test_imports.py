"""The package's imports flow one way (docs/layout.md): data, diffusion, models -> config_keys -> train ->
pipelines and convert -> eval -> main.

Every import statement of every module counts, at the top or inside a function, so a deferred import
cannot hide an upward arrow or a cycle.
"""

import ast
import os

import t2i_jax

PACKAGE_ROOT = os.path.dirname(t2i_jax.__file__)
# The layer of each top-level part; a part may import its own modules and those of lower layers. The
# bottom three import nothing else of t2i_jax: the math knows no network, a network computes no loss.
LAYERS = {"data": 0, "diffusion": 0, "models": 0, "config_keys": 1, "train": 2, "pipelines": 3, "convert": 3,
          "eval": 4, "main": 5}


def _modules():
  """{dotted module name: path} of every .py file in the package."""
  out = {}
  for folder, _, files in os.walk(PACKAGE_ROOT):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        parts = os.path.relpath(path, os.path.dirname(PACKAGE_ROOT))[:-3].split(os.sep)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return out


def _imports(path: str, modules) -> set:
  """The t2i_jax modules a file imports (`from t2i_jax.x import y` counts y when y is a module)."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      found |= {alias.name for alias in node.names if alias.name.startswith("t2i_jax")}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("t2i_jax"):
      for alias in node.names:
        child = f"{node.module}.{alias.name}"
        found.add(child if child in modules else node.module)
  return found


def _part(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def _graph():
  modules = _modules()
  return {name: _imports(path, modules) - {"t2i_jax"} for name, path in modules.items()}


def upward_imports(graph) -> list:
  """'a -> b' for each import from a part to a part that is not lower than it (or another bottom part)."""
  bad = []
  for module, targets in graph.items():
    source = _part(module)
    for target in targets:
      dest = _part(target)
      if source in LAYERS and dest != source and (dest not in LAYERS or LAYERS[dest] >= LAYERS[source]):
        bad.append(f"{module} -> {target}")
  return sorted(bad)


def cycles(graph) -> list:
  """One cycle (a list of modules, first == last) per strongly connected group of modules, if any."""
  found, state = [], {}

  def visit(node, stack):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        found.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, stack)
    stack.pop()
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node, [])
  return found


def test_imports_flow_one_way_without_cycles():
  graph = _graph()
  assert len(graph) > 50 and "t2i_jax.pipelines.stage" in graph
  assert upward_imports(graph) == []
  assert cycles(graph) == []


def test_the_checks_find_an_upward_import_and_a_cycle():
  graph = {"t2i_jax.train.loop": {"t2i_jax.pipelines.sample_workdir"},
           "t2i_jax.pipelines.sample_workdir": {"t2i_jax.train.loop"},
           "t2i_jax.models.unet": {"t2i_jax.data.tokenizer"},
           "t2i_jax.eval.fid": {"t2i_jax.train.families"}}
  assert upward_imports(graph) == ["t2i_jax.models.unet -> t2i_jax.data.tokenizer",
                                   "t2i_jax.train.loop -> t2i_jax.pipelines.sample_workdir"]
  assert cycles(graph) == [["t2i_jax.pipelines.sample_workdir", "t2i_jax.train.loop",
                            "t2i_jax.pipelines.sample_workdir"]]
