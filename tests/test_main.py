"""The command line: a user error is one line on stderr, a non-zero exit, and nothing written."""

import logging
import os
import subprocess
import sys
import warnings

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "--config=configs/shapes_default.py:runlocal"
# ml_collections reads a config file with importlib's deprecated load_module(); the command line in its own process
# does not show that (Python shows a DeprecationWarning only from __main__), so the in-process calls do not either.
pytestmark = pytest.mark.filterwarnings("ignore:the load_module.. method is deprecated:DeprecationWarning")


def _cli(*args):
  """`python -m t2i_jax.main *args` as a real process (a new interpreter: ~5 s, most of it importing jax)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("T2I_JAX_VERBOSE", None)
  return subprocess.run([sys.executable, "-m", "t2i_jax.main", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.fixture
def cli(monkeypatch, capsys):
  """cli(*args) -> CompletedProcess: the command line's own entry, t2i_jax.main.cli(), called in this process with
  sys.argv = [main.py, *args], its SystemExit status and what it printed (capsys) as a subprocess would report them.

  The CLI sets up a whole process: absl's app.run parses the global absl flags (and --config defines a flag per
  --config.* override), puts absl's handler on the root logger and sets the logging level, and main.py adds
  warnings filters, a warnings format and environment variables. Each call starts as a new process would and
  leaves this worker as it found it, so that no parse or logging level reaches the next call or test."""
  from absl import app, command_name, flags
  from absl import logging as absl_logging
  from t2i_jax import main

  assert not flags.FLAGS.is_parsed(), "something in this process parsed absl's flags; the in-process CLI restores none"
  monkeypatch.chdir(REPO)  # --config paths are relative to the repository, as in _cli
  monkeypatch.delenv("T2I_JAX_VERBOSE", raising=False)
  monkeypatch.setattr(command_name, "make_process_name_useful", lambda: None)  # it would rename the pytest worker
  environ = {}  # name -> its value before main.py's _quiet_third_party set it (None: unset)
  quiet_third_party = main._quiet_third_party  # pylint: disable=protected-access

  def quiet_third_party_undoably():
    # Only main.py's own variables are undone: a library imported during the call may set some for itself.
    before = dict(os.environ)
    quiet_third_party()
    environ.update({name: before.get(name) for name in os.environ if os.environ[name] != before.get(name)})

  monkeypatch.setattr(main, "_quiet_third_party", quiet_third_party_undoably)

  def run(*args):
    # app.run's one-time set-up (absl's log handler, --verbosity) runs in every call, as in a new process.
    monkeypatch.setattr(app._run_init, "done", False)  # pylint: disable=protected-access
    monkeypatch.setattr(app._register_and_parse_flags_with_usage, "done", False)  # pylint: disable=protected-access
    # ml_collections reads the --config.* overrides from sys.argv, not from the argv that absl parses.
    monkeypatch.setattr(sys, "argv", [main.__file__, *args])
    handlers = logging.root.handlers[:]
    levels = [(logger, logger.level) for logger in (logging.root, absl_logging.get_absl_logger())]
    formatwarning = warnings.formatwarning
    capsys.readouterr()
    try:
      with warnings.catch_warnings(), pytest.raises(SystemExit) as exit_info:  # app.run always exits
        main.cli()
    finally:
      flags.FLAGS.unparse_flags()  # first: resetting --verbosity sets logging levels, which are restored below
      for name in [name for name in flags.FLAGS if name.startswith("config.")]:  # one per --config.* override
        delattr(flags.FLAGS, name)
      logging.root.handlers[:] = handlers
      for logger, level in levels:
        logger.setLevel(level)
      warnings.formatwarning = formatwarning
      for name, value in environ.items():
        if value is None:
          os.environ.pop(name, None)
        else:
          os.environ[name] = value
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(sys.argv, 0 if exit_info.value.code is None else exit_info.value.code,
                                       out, err)

  yield run
  assert not flags.FLAGS.is_parsed() and not [name for name in flags.FLAGS if name.startswith("config.")]


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
    (["--mode=sample", "--sampler=bogus"], "sampler='bogus' is not supported; use one of 'ddpm'"),
    (["--mode=sample", "--guidance=nan"], "guidance=nan must be a finite number"),
    (["--mode=sample", "--prompt=chartreuse dodecahedron"], "no word of the prompt 'chartreuse dodecahedron'"),
    (["--mode=sample", "--image=/nonexistent/scene.png", "--box=0,0,8,8"], "--image /nonexistent/scene.png: no such"),
    (["--mode=eval", "--eval_setting=ddim:fast:3"], "STEPS must be an integer"),
    (["--config.model.model_channels=64"], "was written by a run with another model config"),
]
# The cases run as a real `python -m t2i_jax.main`, one of each kind; the others call the same entry in this process
# (the `cli` fixture). Only a new interpreter shows what importing jax, Orbax or TFDS prints, what absl's log
# handler (made on import, writing to the stderr of that moment) prints, and warnings (this process's pytest
# records them instead of printing them). These two go deepest: a training run's set-up on a fresh workdir, and
# the check of a trained workdir's config that comes before a resumed run would write.
REAL_PROCESS = {"--config.model.text.vocab_size=10", "--config.model.model_channels=64"}


@pytest.mark.parametrize("args, match", FRESH, ids=[" ".join(a) for a, _ in FRESH])
@pytest.mark.slow
def test_a_bad_input_on_a_fresh_workdir_is_one_line_and_creates_nothing(args, match, tmp_path, cli):
  fresh = str(tmp_path / "fresh")
  config = [a for a in args if a.startswith("--config=")] or [CONFIG]
  run = _cli if " ".join(args) in REAL_PROCESS else cli
  _assert_one_line_error(run(*config, f"--workdir={fresh}", *[a for a in args if not a.startswith("--config=")]),
                         match)
  assert not os.path.exists(fresh)


@pytest.mark.parametrize("args, match", TRAINED, ids=[" ".join(a) for a, _ in TRAINED])
@pytest.mark.slow
def test_a_bad_input_on_a_trained_workdir_is_one_line_and_changes_nothing(args, match, workdir, cli):
  before = _listing(workdir)
  run = _cli if " ".join(args) in REAL_PROCESS else cli
  _assert_one_line_error(run(CONFIG, f"--workdir={workdir}", *args), match)
  assert _listing(workdir) == before


@pytest.mark.slow
def test_verbose_shows_the_traceback_instead_of_the_line(workdir):
  """A real process: the traceback is the interpreter's report of the exception that --verbose lets through."""
  before = _listing(workdir)
  result = _cli(CONFIG, f"--workdir={workdir}", "--mode=sample", "--steps=0", "--verbose")
  assert result.returncode != 0 and "Traceback" in result.stderr and "steps=0" in result.stderr
  assert _listing(workdir) == before


@pytest.mark.slow
def test_sampling_names_unknown_words_and_prints_no_third_party_warnings(workdir):
  """A real process: its stderr holds everything that libraries print, which pytest's capture in this one does not."""
  result = _cli(CONFIG, f"--workdir={workdir}", "--mode=sample", "--prompt=a chartreuse dodecahedron",
                "--steps=2")
  assert result.returncode == 0, result.stderr
  assert result.stderr.strip().splitlines() == [
      "warning: prompt word(s) outside the tokenizer's vocabulary, read as unknown tokens: 'chartreuse', "
      "'dodecahedron'."]
  assert result.stdout.startswith("wrote ")
