"""Test setup: 8 fake CPU devices, made before jax initialises its backends."""

import os

# The suite's models are tiny, so compiling, not running, is most of its time; unless XLA_FLAGS says
# otherwise it compiles at LLVM optimisation level 0 (XLA's default is 3) and with XLA:CPU's older
# elemental fusion emitters: a test-sized U-Net's forward and gradient compile in 0.27× O3's time (O0
# alone 0.55×; benchmarks/compile_opt_level.py, the README's Benchmarks). jax is pinned to 0.10 in
# setup.py: an XLA flag a later jaxlib drops would stop the backend. The one check that needs more
# (float32 VB terms against float64, tests/diffusion/test_losses.py) compiles at level 1 by itself.
_flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
if "--xla_backend_optimization_level" not in _flags:
  _flags += " --xla_backend_optimization_level=0"
if "--xla_cpu_use_fusion_emitters" not in _flags:
  _flags += " --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import tempfile  # noqa: E402

# Repeated programs (every training-loop test compiles the same step) come from a
# persistent compilation cache instead of being compiled again; set in the environment
# so that the CLI's subprocesses (tests/test_main.py) read and fill it too.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "t2i_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import importlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def load_config(spec: str):
  """configs/NAME.py[:ARG] -> its ConfigDict ("shapes_default:runlocal")."""
  name, _, arg = spec.partition(":")
  return importlib.import_module(f"configs.{name}").get_config(arg or None)


def perturb(params, scale: float, seed: int = 0):
  """params + scale·N(0, 1) per leaf, drawn on the host: a two-step run's weights barely move a model's output,
  and a jax.random draw per leaf would compile a program per leaf shape."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: p + scale * rng.standard_normal(np.shape(p)).astype(np.asarray(p).dtype), params)


@pytest.fixture
def train_runlocal():
  """train(spec, workdir, **overrides) -> (config, metrics lines): two steps of a `:runlocal` config through
  the real loop, checked to have logged both steps with finite losses and saved step 2."""
  from t2i_jax.train import loop

  def train(spec, workdir, **overrides):
    config = load_config(spec)
    config.update(overrides)
    state = loop.train(config, str(workdir))
    assert int(state.step) == 2
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [m["step"] for m in lines] == [1, 2]
    assert all(np.isfinite(m["loss"]) for m in lines)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]
    return config, lines

  return train


@pytest.fixture
def check_samples():
  """check(paths, num, size): sample_to_files wrote `num` noise-like size×size PNGs and a grid."""
  from PIL import Image

  def check(paths, num, size):
    assert len(paths["images"]) == num
    pixels = np.stack([np.asarray(Image.open(p)) for p in paths["images"]])
    assert pixels.shape == (num, size, size, 3)
    assert pixels.std() > 1.0  # noise-like images after two steps, not a constant fill
    assert os.path.getsize(paths["grid"]) > 100

  return check


@pytest.fixture(scope="session")
def trained_runlocal(tmp_path_factory):
  """(workdir, final state) of one 3-step shapes_default:runlocal run (checkpoints at steps 2 and 3, samples at
  step 2) that tests share; a test that changes the workdir copies it first."""
  from configs import shapes_default
  from t2i_jax.pipelines import sample_workdir
  from t2i_jax.train import loop

  workdir = str(tmp_path_factory.mktemp("trained"))
  config = shapes_default.get_config("runlocal")
  config.train.update(dict(num_steps=3, checkpoint_every=2, sample_every=2))
  state = loop.train(config, workdir, sample_fn=sample_workdir.periodic_sampler(config, workdir))
  return workdir, state


@pytest.fixture
def trained_copy(trained_runlocal, tmp_path):
  """(workdir, final state): a copy of the shared 3-step run in this test's tmp_path, for a test that writes
  into the workdir (samples, metrics, a resumed run) without touching what other tests read."""
  workdir, state = trained_runlocal
  copy = str(tmp_path / "trained")
  shutil.copytree(workdir, copy)
  return copy, state


@pytest.fixture(scope="session")
def unclip_runlocal(tmp_path_factory):
  """The `shapes_unclip:runlocal` chain config, its four stages (CLIP, prior, decoder, upsampler) each
  trained two steps through the real loop into one temporary directory that tests share."""
  from t2i_jax.pipelines import sample_workdir
  from t2i_jax.train import loop

  root = tmp_path_factory.mktemp("unclip")
  chain = load_config("shapes_unclip:runlocal")
  workdirs = {name: str(root / name) for name in ("clip", "prior", "decoder", "upsampler")}
  chain.unclip.update({f"{name}_workdir": path for name, path in workdirs.items()})
  for name, path in workdirs.items():
    config = load_config(f"shapes_{name}:runlocal")
    if name in ("prior", "decoder"):
      config[name].clip_workdir = workdirs["clip"]
    loop.train(config, path, sample_fn=sample_workdir.periodic_sampler(config, path))
  return chain


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: trains through the real loop or runs the CLI (seconds to a minute "
                                     "each); the suite sends the files that hold them to its workers first")


def pytest_collection_modifyitems(items):
  """The files with the most slow tests first, so the light files fill in at the end and the two xdist
  workers finish together (in collection order the training files came last and one worker ran alone for
  the last ~3 minutes of a cold run). `make test` passes --no-loadscope-reorder, without which xdist sends
  the files with the most tests first."""
  slow = {}
  for item in items:
    path = item.nodeid.split("::")[0]
    slow[path] = slow.get(path, 0) + (item.get_closest_marker("slow") is not None)
  items.sort(key=lambda item: -slow[item.nodeid.split("::")[0]])
