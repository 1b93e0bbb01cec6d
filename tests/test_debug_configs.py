"""debug=overfit drives the loss on its one batch to the floor and never below it; debug=profiler
leaves its profile in the run folder."""

from __future__ import annotations

import csv
import math

import pytest
from support import requires_data
from test_cli import assert_ok, run

IMAGE_DIMS = 28 * 28  # binarized MNIST, the default data


@requires_data
@pytest.mark.slow
def test_overfitting_one_batch_brings_its_loss_near_the_floor_of_ln_b_nats_per_image(tmp_path):
    # B distinct images under any distribution p: mean of -ln p(x_i) >= -ln(sum p(x_i) / B) >= ln B,
    # so the loss (nats per dimension) cannot fall below ln(B) / dims; a model that can memorise
    # the batch gets close to it, and one that goes below it sees the pixels it predicts
    result = run(
        "train.py",
        "debug=overfit",
        "logger=csv",
        "model.net.layers=4",
        f"hydra.run.dir={tmp_path}",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert_ok(result)
    with open(tmp_path / "csv" / "version_0" / "metrics.csv") as f:
        losses = [float(row["train/loss"]) for row in csv.DictReader(f) if row["train/loss"]]
    batch = 8  # debug=overfit's data.batch_size
    floor = math.log(batch) / IMAGE_DIMS
    assert len(losses) == 300 and losses[0] > 0.5  # every step logged; ~ln 2 at the start
    final = min(losses[-10:])
    assert floor <= final < floor + 0.03 * (losses[0] - floor), (final, floor)


@requires_data
def test_the_profiler_writes_its_report_into_the_run_folder(tmp_path):
    result = run(
        "train.py",
        "debug=profiler",
        "logger=csv",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "fid.num_samples=0",
        "model.net.layers=1",
        "curve.images=16",
        "callbacks.sample_grid.num_samples=1",
        f"hydra.run.dir={tmp_path}",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert_ok(result)
    report = (tmp_path / "profile" / "fit-profile.txt").read_text()
    assert report.startswith("FIT Profiler Report")
    assert "run_training_batch" in report and "[Strategy]SingleDeviceStrategy.validation_step" in report
