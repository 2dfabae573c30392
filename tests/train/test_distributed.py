"""Two local processes with jax.distributed (gloo CPU collectives) train through the CLI and agree."""

import os
import re
import socket
import subprocess
import sys
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_and_agree(tmp_path):
  port = _free_port()
  # The suite's compile flags (conftest): these processes compile far longer than they compute.
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform")]
  env = dict(os.environ, XLA_FLAGS=" ".join(["--xla_force_host_platform_device_count=2", *flags]),
             JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  workdir = tmp_path / "run"
  procs = []
  for pid in range(2):
    cmd = [sys.executable, "-m", "t2i_jax.main", "--config=configs/shapes_default.py:runlocal",
           f"--workdir={workdir}", "--config.train.sample_every=0", "--distributed",
           # One U-Net level, no attention: the test is about the processes, and this compiles in seconds.
           "--config.model.channel_mult=(1,)", "--config.model.attention_resolutions=()",
           f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={pid}"]
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True))
  outputs = []
  for proc in procs:
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    outputs.append(out)
  # Each process reports the 4 global devices (2 of its own) and the params of its own replica.
  for out in outputs:
    assert "devices: 4" in out
  fingerprints = [re.search(r"done: step 2, params fingerprint (\S+)", out).group(1) for out in outputs]
  assert fingerprints[0] == fingerprints[1]
  assert float(fingerprints[0]) > 0
  # One checkpoint, metrics written once (by process 0).
  assert os.listdir(workdir / "checkpoints") == ["2"]
  assert len(open(workdir / "metrics.jsonl").read().splitlines()) == 2
