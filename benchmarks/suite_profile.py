"""Where the test suite's time goes: XLA compiles, tracing and lowering per test, file and program.

As a pytest plugin it logs, for every test, each program jax traces, lowers and compiles (jax_log_compiles)
and each persistent-cache hit, with their seconds, into $SUITE_PROFILE_DIR/<xdist worker>.json; as a script
it sums those files per test file and per program name.

  SUITE_PROFILE_DIR=/tmp/profile JAX_COMPILATION_CACHE_DIR=$(mktemp -d) PYTHONPATH=. \
      .venv/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -p benchmarks.suite_profile tests
  .venv/bin/python benchmarks/suite_profile.py /tmp/profile

Run from a fresh clone with an empty compilation cache and nothing else on the machine (benchmarks/results/
suite_time.md). The log handler costs little, but wall times measured with it are not the suite's time.
"""

import collections
import glob
import json
import logging
import os
import re
import sys
import time

import pytest

_EVENT = re.compile(r"Finished (tracing|jaxpr to MLIR module conversion|XLA compilation of) (\S+).* in ([0-9.e-]+) sec")
_KINDS = {"tracing": "trace", "jaxpr to MLIR module conversion": "lower", "XLA compilation of": "compile"}
_LOGGERS = ("jax._src.dispatch", "jax._src.interpreters.pxla", "jax._src.compiler", "jax._src.compilation_cache")
_events = []  # (kind, program, seconds) of the test running now
_rows = []


class _Handler(logging.Handler):

  def emit(self, record):
    message = record.getMessage()
    match = _EVENT.match(message)
    if match:
      name = match.group(2)
      _events.append((_KINDS[match.group(1)], name if name.startswith("jit(") else f"jit({name})",
                      float(match.group(3))))
    elif "cache hit" in message.lower():
      _events.append(("cache_hit", "", 0.0))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  del nextitem
  import jax  # after conftest.py set XLA_FLAGS

  if not any(isinstance(h, _Handler) for h in logging.getLogger(_LOGGERS[0]).handlers):
    jax.config.update("jax_log_compiles", True)
    for name in _LOGGERS:
      logger = logging.getLogger(name)
      logger.addHandler(_Handler())
      logger.setLevel(logging.DEBUG)
      logger.propagate = False  # jax_log_compiles would otherwise print every compile as a warning
  _events.clear()
  start = time.time()
  yield
  _rows.append(dict(id=item.nodeid, wall=time.time() - start, events=list(_events)))


def pytest_sessionfinish(session):
  del session
  folder = os.environ.get("SUITE_PROFILE_DIR", "suite_profile")
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, os.environ.get("PYTEST_XDIST_WORKER", "main") + ".json"), "w") as f:
    json.dump(_rows, f)


def summarize(folder: str, top: int = 30) -> str:
  """Markdown tables: per test file and per program name, the wall seconds and the compile work."""
  rows = [row for path in sorted(glob.glob(os.path.join(folder, "*.json"))) for row in json.load(open(path))]
  files = collections.defaultdict(collections.Counter)
  programs = collections.defaultdict(collections.Counter)
  for row in rows:
    file = files[row["id"].split("::")[0]]
    file["wall"] += row["wall"]
    for kind, program, seconds in row["events"]:
      file[kind] += seconds
      file["compiles"] += kind == "compile"
      file["cache_hits"] += kind == "cache_hit"
      if kind != "cache_hit":
        programs[program][kind] += seconds
        programs[program]["compiles"] += kind == "compile"
  totals = collections.Counter()
  for counts in files.values():
    totals.update(counts)
  lines = [f"{len(rows)} tests, {totals['wall']:.0f} worker-seconds: compile {totals['compile']:.0f} s "
           f"({totals['compiles']:.0f} programs, {totals['cache_hits']:.0f} persistent-cache hits), "
           f"trace {totals['trace']:.0f} s, lower {totals['lower']:.0f} s", "",
           "| file | wall s | compiles | compile s | trace s | lower s |", "|---|---|---|---|---|---|"]
  for name, c in sorted(files.items(), key=lambda kv: -kv[1]["wall"])[:top]:
    lines.append(f"| {name} | {c['wall']:.1f} | {c['compiles']:.0f} | {c['compile']:.1f} | {c['trace']:.1f} | "
                 f"{c['lower']:.1f} |")
  lines += ["", "| program | compiles | compile s | trace s | lower s |", "|---|---|---|---|---|"]
  for name, c in sorted(programs.items(), key=lambda kv: -kv[1]["compile"])[:top]:
    lines.append(f"| {name} | {c['compiles']:.0f} | {c['compile']:.1f} | {c['trace']:.1f} | {c['lower']:.1f} |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  print(summarize(sys.argv[1] if len(sys.argv) > 1 else "suite_profile"), end="")
