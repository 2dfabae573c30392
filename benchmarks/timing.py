"""Timing helpers the benchmarks share: a compiled program's first run and its warm median."""

import statistics
import time
from typing import Callable, Tuple

import jax


def median_seconds(run: Callable, reps: int, warmup: int = 2) -> float:
  """The median wall time of `reps` calls of run() (each waited on), after `warmup` untimed calls."""
  for _ in range(warmup):
    jax.block_until_ready(run())
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def first_and_median(run: Callable, reps: int) -> Tuple[float, float]:
  """(the first call's seconds, compiling included; the warm median of `median_seconds`)."""
  start = time.perf_counter()
  jax.block_until_ready(run())
  first = time.perf_counter() - start
  return first, median_seconds(run, reps, warmup=1)
