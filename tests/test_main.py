"""The command line: a user error is one line on stderr, a non-zero exit, and nothing written."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "--config=configs/shapes_default.py:runlocal"


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("T2I_JAX_VERBOSE", None)
  return subprocess.run([sys.executable, "-m", "t2i_jax.main", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


def _listing(workdir):
  """Every file under workdir with its size and modification time."""
  out = {}
  for folder, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(folder, name)
      out[path] = (os.path.getsize(path), os.path.getmtime(path))
  return out


@pytest.fixture
def workdir(trained_copy):
  """A copy of the shared 3-step runlocal run, for the sampling and evaluation errors."""
  return trained_copy[0]


def _assert_one_line_error(result, match):
  assert result.returncode == 2, result.stdout + result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  assert "Traceback" not in result.stdout + result.stderr
  assert match in lines[0], lines[0]


# (flags, the words the one line must hold) for a fresh workdir that must not be created.
FRESH = [
    (["--config.train.num_stepz=3"], "unknown config key 'num_stepz' (did you mean 'num_steps'?)"),
    (["--config=configs/nope.py"], "no such config file"),
    (["--config=configs/shapes_default.py:bogus"], "config argument(s) ['bogus'] not understood"),
    (["--config.model.text.vocab_size=10"], "raise vocab_size to at least"),
    (["--mode=sample"], "has no checkpoint to read; train first"),
    (["--config=configs/shapes_unclip.py:runlocal"], "a chain config names trained stages and trains nothing"),
    (["--mode=sample", "--image=a.png"], "--image on a U-Net's config inpaints it: give the region to fill as"),
    (["--mode=sample", "--mask=m.png"], "--mask and --box mark the region of --image to inpaint"),
    (["--config=configs/shapes_glide.py", "--mode=sample", "--config.glide.base_workdir=/nonexistent/base"],
     "/nonexistent/base has no config.json: it is not a t2i_jax training workdir"),
    (["--config.train.num_steps=-3"], "train.num_steps=-3 must be a positive integer; nothing was written"),
    (["--mode=convert", "--checkpoint=a.pt"], "--mode=convert reads --checkpoint=FILE from --source=NAME"),
]
# ... and for the trained workdir, which must stay as it is.
TRAINED = [
    (["--mode=sample", "--steps=0"], "steps=0: sample with at least 1 step"),
    (["--mode=sample", "--steps=0", "--verbose"], None),  # the traceback instead of the line
    (["--mode=sample", "--sampler=bogus"], "sampler='bogus' is not supported; use one of 'ddpm'"),
    (["--mode=sample", "--guidance=nan"], "guidance=nan must be a finite number"),
    (["--mode=sample", "--prompt=chartreuse dodecahedron"], "no word of the prompt 'chartreuse dodecahedron'"),
    (["--mode=sample", "--image=/nonexistent/scene.png", "--box=0,0,8,8"], "--image /nonexistent/scene.png: no such"),
    (["--mode=eval", "--eval_setting=ddim:fast:3"], "STEPS must be an integer"),
    (["--config.model.model_channels=64"], "was written by a run with another model config"),
]


@pytest.mark.parametrize("args, match", FRESH, ids=[" ".join(a) for a, _ in FRESH])
@pytest.mark.slow
def test_a_bad_input_on_a_fresh_workdir_is_one_line_and_creates_nothing(args, match, tmp_path):
  fresh = str(tmp_path / "fresh")
  config = [a for a in args if a.startswith("--config=")] or [CONFIG]
  _assert_one_line_error(_cli(*config, f"--workdir={fresh}", *[a for a in args if not a.startswith("--config=")]),
                         match)
  assert not os.path.exists(fresh)


@pytest.mark.parametrize("args, match", TRAINED, ids=[" ".join(a) for a, _ in TRAINED])
@pytest.mark.slow
def test_a_bad_input_on_a_trained_workdir_is_one_line_and_changes_nothing(args, match, workdir):
  before = _listing(workdir)
  result = _cli(CONFIG, f"--workdir={workdir}", *args)
  if match is None:  # --verbose
    assert result.returncode != 0 and "Traceback" in result.stderr and "steps=0" in result.stderr
  else:
    _assert_one_line_error(result, match)
  assert _listing(workdir) == before


@pytest.mark.slow
def test_sampling_names_unknown_words_and_prints_no_third_party_warnings(workdir):
  result = _cli(CONFIG, f"--workdir={workdir}", "--mode=sample", "--prompt=a chartreuse dodecahedron",
                "--steps=2")
  assert result.returncode == 0, result.stderr
  assert result.stderr.strip().splitlines() == [
      "warning: prompt word(s) outside the tokenizer's vocabulary, read as unknown tokens: 'chartreuse', "
      "'dodecahedron'."]
  assert result.stdout.startswith("wrote ")
