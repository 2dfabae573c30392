"""The accelerator benchmark's dry run on CPU: benchmarks/device_bench.py at :runlocal sizes, so that the
script still runs when a GPU is lent (its figures here mean nothing and are not checked)."""

import importlib.util
import json
import os

import pytest

from t2i_jax import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
  spec = importlib.util.spec_from_file_location("device_bench", os.path.join(ROOT, "benchmarks", "device_bench.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_the_dry_run_measures_its_cases_and_writes_its_tables(tmp_path, capsys):
  bench = _bench()
  # Every train case runs the same train_case code on its own config (those configs train through the loop in
  # tests/train): one case, the one with model overrides (bf16 activations, remat), stands for them, so that the
  # dry run compiles one train step instead of five.
  (name, spec, _, model), = [c for c in bench.TRAIN_CASES if c[0] == "glide_base64 bf16 remat"]
  capsys.readouterr()
  assert bench.main(["--dry-run", "--list"]) == []  # device.sh's loop: every case, one a line
  assert capsys.readouterr().out.splitlines() == [c[0] for c in bench.TRAIN_CASES] + ["pytorch", "glide", "unclip"]
  bench.main(["--dry-run", "--out", str(tmp_path), "--case", name])
  rows = bench.main(["--dry-run", "--out", str(tmp_path), "--only", "sample", "--append"])  # after the train row
  (train,) = [r for r in rows if r.kind == "train"]
  assert train.case == name and train.seconds > 0 and train.images_per_s == pytest.approx(train.batch / train.seconds)
  assert train.tflops_per_run > 0 and train.compile_s > 0
  # bfloat16 activations keep float32 params: the parameter count of the float32 model.
  assert train.params == models.count_params(bench.load_config(spec, True).model)
  assert bench.load_config(spec, True, **model).model.dtype == "bfloat16"
  samples = [r for r in rows if r.kind == "sample"]
  assert len(samples) == 2 and all(r.seconds_per_image == pytest.approx(r.seconds / r.batch) for r in samples)
  (json_file,) = [f for f in os.listdir(tmp_path) if f.endswith(".json")]
  written = json.load(open(tmp_path / json_file))
  assert written["dry_run"] and [r["case"] for r in written["rows"]] == [r.case for r in rows]
  table = open(tmp_path / json_file.replace(".json", ".md")).read()
  assert "dry run" in table and all(f"| {r.case} |" in table for r in rows)
  # device.sh's per-case processes: --list names the cases, --case runs one, --append keeps the run's rows.
  capsys.readouterr()
  assert bench.main(["--dry-run", "--list", "--only", "torch,sample"]) == []
  assert capsys.readouterr().out.splitlines() == ["pytorch", "glide", "unclip"]
  again = bench.main(["--dry-run", "--out", str(tmp_path), "--case", "pytorch", "--append"])
  torch_rows = again[len(rows):]
  assert [r.case for r in again[:len(rows)]] == [r.case for r in rows]
  assert torch_rows and all(r.kind == "torch train" and (r.seconds or r.note.startswith("skipped: "))
                            for r in torch_rows)
  assert json.load(open(tmp_path / json_file))["rows"][-1]["case"] == torch_rows[-1].case


def test_mfu_uses_the_peak_of_the_device_and_dtype():
  bench = _bench()
  assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4
  assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "float32") == 494.7
  assert bench.peak_tflops("NVIDIA H100 PCIe", "bfloat16") == 756.0
  assert bench.peak_tflops("cpu", "float32") is None
