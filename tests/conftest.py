"""Test setup: 8 fake CPU devices, made before jax initialises its backends."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import tempfile  # noqa: E402

import jax  # noqa: E402

# Repeated programs (every training-loop test compiles the same step) come from a
# persistent compilation cache instead of being compiled again.
jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "t2i_jax_test_xla_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
