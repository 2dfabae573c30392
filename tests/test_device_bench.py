"""The accelerator benchmark's dry run on CPU: benchmarks/device_bench.py at :runlocal sizes, so that the
script still runs when a GPU is lent (its figures here mean nothing and are not checked)."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
  spec = importlib.util.spec_from_file_location("device_bench", os.path.join(ROOT, "benchmarks", "device_bench.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_the_dry_run_measures_every_case_and_writes_its_tables(tmp_path):
  bench = _bench()
  rows = bench.main(["--dry-run", "--out", str(tmp_path)])
  by_case = {r.case: r for r in rows}
  trains = [r for r in rows if r.kind == "train"]
  assert [r.case for r in trains] == [name for name, *_ in bench.TRAIN_CASES]
  for r in trains:
    assert r.seconds > 0 and r.images_per_s == pytest.approx(r.batch / r.seconds)
    assert r.tflops_per_run > 0 and r.compile_s > 0 and r.params > 0
  # bfloat16 activations keep float32 params: the same parameter count, the same FLOPs counted.
  f32, bf16 = by_case["glide_base64 f32"], by_case["glide_base64 bf16"]
  assert f32.params == bf16.params
  samples = [r for r in rows if r.kind == "sample"]
  assert len(samples) == 2 and all(r.seconds_per_image == pytest.approx(r.seconds / r.batch) for r in samples)
  torch_rows = [r for r in rows if r.kind == "torch train"]
  assert torch_rows and all(r.seconds or r.note.startswith("skipped: ") for r in torch_rows)
  (json_file,) = [f for f in os.listdir(tmp_path) if f.endswith(".json")]
  written = json.load(open(tmp_path / json_file))
  assert written["dry_run"] and [r["case"] for r in written["rows"]] == [r.case for r in rows]
  table = open(tmp_path / json_file.replace(".json", ".md")).read()
  assert "dry run" in table and all(f"| {r.case} |" in table for r in rows)
  # device.sh's per-case processes: --list names the cases, --case runs one, --append keeps the run's rows.
  assert bench.main(["--dry-run", "--list", "--only", "torch,sample"]) == []
  again = bench.main(["--dry-run", "--out", str(tmp_path), "--case", "pytorch", "--append"])
  assert [r.case for r in again] == [r.case for r in rows] + [r.case for r in torch_rows]
  assert json.load(open(tmp_path / json_file))["rows"][-1]["case"] == torch_rows[-1].case


def test_mfu_uses_the_peak_of_the_device_and_dtype():
  bench = _bench()
  assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4
  assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "float32") == 494.7
  assert bench.peak_tflops("NVIDIA H100 PCIe", "bfloat16") == 756.0
  assert bench.peak_tflops("cpu", "float32") is None
