"""The benchmark suite's --quick mode, as the README runs it: every field of every JSON line."""

import json
import os
import subprocess
import sys

import pytest
from support import REPO, requires_data

sys.path.insert(0, str(REPO / "benchmarks"))
from run import FIELDS, parse  # noqa: E402


@pytest.mark.slow
@requires_data
def test_quick_benchmark_reports_every_field(tmp_path):
    summary = tmp_path / "summary.md"
    env = os.environ | {"OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    result = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--models", "pixelcnn", "row_lstm",
         "--data", "binarized_mnist", "--device", "cpu", "--markdown", str(summary)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(r["model"], r["data"]) for r in rows] == [("pixelcnn", "binarized_mnist"), ("row_lstm", "binarized_mnist")]
    for row in rows:
        assert tuple(row) == FIELDS
        assert all(row[key] is not None for key in FIELDS), row
        assert row["identical_images"] == row["sample_images"]  # binary draws: float32 rounding cannot flip them
        assert row["hidden"] == 4 and row["layers"] == 1  # --quick sizes, whatever the configs say
        assert row["image_shape"] == "1x8x8"
        for key in FIELDS:
            if key.endswith(("_per_s", "_ms", "overhead", "speedup")):
                assert row[key] > 0, key
    table = summary.read_text()
    assert "| pixelcnn | binarized_mnist |" in table and "| row_lstm | binarized_mnist |" in table
    assert table in result.stdout


@pytest.mark.slow
def test_pipeline_overhead_times_train_py_trainer_against_a_plain_loop(tmp_path):
    summary = tmp_path / "pipeline.md"
    env = os.environ | {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--pipeline-overhead", "--quick", "--models", "pixelcnn",
         "--data", "binarized_mnist", "--device", "cpu", "--clock", "cpu", "--markdown", str(summary)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert (row["model"], row["data"], row["without"]) == ("pixelcnn", "binarized_mnist", "")
    assert row["plain_loop_step_ms"] > 0 and row["lightning_step_ms"] > 0 and row["lightning_overhead"] > 0
    assert "| pixelcnn | binarized_mnist | (whole pipeline) |" in summary.read_text()


def test_the_breakdown_removes_each_default_callback_the_logger_and_all_of_them():
    from omegaconf import OmegaConf
    from run import pipeline_parts

    callbacks = OmegaConf.load(REPO / "conf" / "callbacks" / "default.yaml")
    parts = pipeline_parts(parse(["--pipeline-overhead", "--breakdown"]))
    assert parts == [None, *(f"callbacks.{name}" for name in callbacks), "logger", "callbacks,logger"]
    assert "divergence_guard" in callbacks and "progress_bar" in callbacks


def test_the_default_models_are_every_net_with_a_cached_sampler():
    # Ground truth from the nets themselves: each likelihood model of conf/model/ at its config size,
    # in the list exactly when its net gives a cached sampler.
    from run import MODELS, build

    args = parse([])
    cached = []
    for path in sorted((REPO / "conf" / "model").glob("*.yaml")):
        if path.stem == "dcgan":  # a GAN: no likelihood, no pixel-by-pixel sampling
            continue
        net = build(path.stem, "binarized_mnist", args).net
        make = getattr(net, "cached_sampler", None)
        if make is not None and make(1, 4, 4) is not None:
            cached.append(path.stem)
    assert sorted(MODELS) == cached
