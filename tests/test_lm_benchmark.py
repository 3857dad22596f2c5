"""benchmarks/lm.py's helpers: preset specs with list values, and a run bounded by a budget of CPU time."""

from __future__ import annotations

import gzip
import importlib.util
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_lm", Path(__file__).parents[1] / "benchmarks" / "lm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_lm"] = module
    spec.loader.exec_module(module)
    return module


def test_preset_spec_keeps_list_values_whole(bench) -> None:
    assert bench._split_spec("ptb-recommended") == ("ptb-recommended", [])
    assert bench._split_spec("ptb-recommended+model.softmax_cutoffs=[1000,4000],train.lr=0.005") == (
        "ptb-recommended", ["model.softmax_cutoffs=[1000,4000]", "train.lr=0.005"])


def test_cpu_budget_sets_the_steps_from_cpu_seconds_per_step(bench, tmp_path: Path, shared_data: Path, monkeypatch) -> None:
    with gzip.open(shared_data / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8") as f:
        text = f.read(20_000)
    (tmp_path / "train.txt").write_text(text[:18_000], encoding="utf-8")
    (tmp_path / "val.txt").write_text(text[18_000:], encoding="utf-8")
    monkeypatch.setattr(bench, "WORK", tmp_path / "work")
    tiny = ["model.embed_dim=8", "model.hidden_dim=16", "model.num_layers=1", "train.batch_size=4", "data.bptt=16",
            "data.eval_batch_size=2", "train.eval_every=0"]
    row = bench.train_one("char-shakespeare", tmp_path / "train.txt", tmp_path / "val.txt", None, None, "cpu", tiny,
                          cpu_minutes=0.002)
    probe = row["schedule_probe"]
    assert probe["median_step_cpu_s"] > 0 and "median_step_s" not in probe
    assert row["steps"] == probe["planned_steps"]
    # the probe's CPU s/step is recorded rounded to 4 decimals: the planned steps lie within what that rounding allows
    lo, hi = (max(50, int(0.002 * 60 * 0.93 / max(probe["median_step_cpu_s"] + d, 1e-6))) for d in (5e-5, -5e-5))
    assert lo <= probe["planned_steps"] <= hi
    assert row["budget_cpu_minutes"] == 0.002 and 0 < row["cpu_s"]
    assert [p.name.endswith("-cpu-0.002cpumin") for p in (tmp_path / "work" / "runs").iterdir()] == [True]
