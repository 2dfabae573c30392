"""Test setup: 8 fake CPU devices, made before jax initialises its backends."""

import os

# LLVM optimisation level 1 rather than XLA's default unless XLA_FLAGS sets one: the suite's models
# are tiny, so compiling, not running, is most of its time: O1 costs the cold suite 0.85× the CPU
# time and passes the same float checks (O0 is faster still but loses precision in the VB terms);
# benchmarks/compile_opt_level.py and the README's Benchmarks section.
_flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
if "--xla_backend_optimization_level" not in _flags:
  _flags += " --xla_backend_optimization_level=1"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import tempfile  # noqa: E402

import jax  # noqa: E402

# Repeated programs (every training-loop test compiles the same step) come from a
# persistent compilation cache instead of being compiled again.
jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "t2i_jax_test_xla_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
