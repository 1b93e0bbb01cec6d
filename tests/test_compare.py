"""The comparison: table rows, order and relative speeds from records; the files at the end of a
real multirun (and on W&B); `python -m pixel_lightning.compare`; eval.py on a run's checkpoint."""

import csv
import json
import re
import subprocess
import sys

import pytest
from PIL import Image
from support import REPO, real_data_dir, wandb_logged, wandb_records
from test_cli import assert_ok, run

from pixel_lightning.evaluation.compare import OUTPUTS, comparison_rows, main, read_records
from pixel_lightning.images import make_grid, save_png
from pixel_lightning.records import blank_record, write_record

LABEL = "FID (mnist-2level-cnn, test acc 96.0%)"


def make_run(folder, name, grid_level=None, **fields):
    identity = {"model": name, "dataset": "binarized_mnist", "task": "train", "status": "finished"}
    record = blank_record(**identity | fields)
    if grid_level is not None:
        import torch

        save_png(make_grid(torch.full((4, 1, 28, 28), grid_level), 2), folder / name / "samples" / "scored.png")
        record["sample_grid"] = "samples/scored.png"
    write_record(folder / name, record)


def test_compare_orders_rows_and_computes_relative_speeds(tmp_path):
    measured = {"fid_label": LABEL, "sample_time_per_image_s": 0.1, "epochs": 1.0, "steps": 10, "params": 100}
    make_run(tmp_path, "pixelcnn", 1, train_time_s=60.0, train_images_per_s=100.0, test_nll=90.0, test_bpd=0.17,
             fid=20.0, **measured)
    make_run(tmp_path, "row_lstm", 0, train_time_s=60.0, train_images_per_s=50.0, test_nll=85.0, test_bpd=0.16,
             fid=30.0, **measured)
    make_run(tmp_path, "dcgan", 1, train_time_s=60.0, train_images_per_s=200.0, fid=5.0, **measured)  # no likelihood
    make_run(tmp_path / "sweep", "diagonal_bilstm", status="failed", error="RuntimeError: out of memory")

    rows = comparison_rows(read_records(tmp_path))
    assert [row["model"] for row in rows] == ["row_lstm", "pixelcnn", "dcgan", "diagonal_bilstm"]
    assert [row["relative_speed"] for row in rows] == [0.25, 0.5, 1.0, None]  # the GAN is the fastest
    assert rows[3]["run_dir"] == "sweep/diagonal_bilstm"

    main([str(tmp_path)])
    assert all((tmp_path / name).is_file() for name in OUTPUTS)
    table = (tmp_path / "comparison.md").read_text().splitlines()
    assert len(table) == 2 + 4 and LABEL in table[0] and "| FID |" not in table[0]
    cells = [line.split(" | ") for line in table[2:]]
    assert [c[8] for c in cells] == ["0.25x", "0.50x", "1.00x", "–"]
    assert cells[2][10] == "–" and cells[2][12] == "5.00"  # no bits/dim for the GAN, but its FID
    assert "failed: RuntimeError: out of memory" in table[5]
    with open(tmp_path / "comparison.csv") as stream:
        written = list(csv.DictReader(stream))
    assert [row["model"] for row in written] == ["row_lstm", "pixelcnn", "dcgan", "diagonal_bilstm"]
    assert written[2]["test_bpd"] == "" and float(written[1]["relative_speed"]) == 0.5
    picture = Image.open(tmp_path / "samples_side_by_side.png")
    grid_width = 3 * (2 * 28 + 3 * 2)
    assert picture.width >= 3 * grid_width and picture.height == 24 + grid_width  # three grids, titles above
    assert Image.open(tmp_path / "comparison.png").size[0] > 500


def test_compare_on_a_folder_without_records_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main([str(tmp_path)])
    assert exit_status.value.code == 2 and "No record.json under" in capsys.readouterr().err


@pytest.fixture(scope="module")
def smoke_multirun(tmp_path_factory):
    """`python train.py -m model=pixelcnn,row_lstm debug=smoke`, W&B offline."""
    if real_data_dir() is None:
        pytest.skip("PIXEL_DATA_DIR is not set: point it at a folder with the datasets (e.g. ../shared/data)")
    sweep = tmp_path_factory.mktemp("sweep")
    result = run("train.py", "-m", "model=pixelcnn,row_lstm", "debug=smoke", f"hydra.sweep.dir={sweep}",
                 env={"WANDB_MODE": "offline"})
    assert_ok(result)
    return sweep, result


def test_multirun_ends_with_the_comparison_files_and_a_wandb_run_holding_the_table(smoke_multirun):
    sweep, result = smoke_multirun
    assert all((sweep / name).is_file() for name in OUTPUTS)
    rows = (sweep / "comparison.md").read_text().splitlines()[2:]
    assert len(rows) == 2 and {row.split(" | ")[0].lstrip("| ") for row in rows} == {"pixelcnn", "row_lstm"}
    for job in ("0", "1"):
        record = json.loads((sweep / job / "record.json").read_text())
        assert record["status"] == "finished" and record["steps"] == 5 and record["params"] > 0
        assert all(record[key] is not None for key in ("train_images_per_s", "test_nll", "test_bpd", "fid",
                                                       "sample_time_per_image_s", "peak_memory_mb"))
        logged = wandb_logged(next((sweep / job / "wandb").glob("offline-run-*")))
        assert "record/fid" in logged["summary"]
        assert any(key.startswith("run_record") for key in logged["history"])  # the one-row table
    assert "Comparison of 2 runs" in result.stdout
    (comparison_run,) = (sweep / "wandb").glob("offline-run-*")
    logged = wandb_logged(comparison_run)
    logged_keys = {key.split("/")[0] for key in logged["history"]}  # media are logged as nested keys
    assert {"comparison", "comparison_plot", "samples_side_by_side"} <= logged_keys and logged["exited"]
    groups = {record.run.run_group for record in wandb_records(comparison_run) if record.HasField("run")}
    assert groups == {"binarized_mnist"}  # the jobs' group


def test_compare_rebuilds_the_same_files(smoke_multirun, tmp_path):
    sweep, _ = smoke_multirun
    before = {name: (sweep / name).read_bytes() for name in ("comparison.md", "comparison.csv")}
    result = subprocess.run([sys.executable, "-m", "pixel_lightning.compare", str(sweep)], cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert {name: (sweep / name).read_bytes() for name in before} == before
    assert Image.open(sweep / "samples_side_by_side.png").size[0] > 2 * 3 * 62


def test_eval_reproduces_the_test_nll_printed_by_training(smoke_multirun, tmp_path):
    _, result = smoke_multirun
    printed = re.findall(r"Test NLL: (\S+) nats/image, (\S+) bits/dim \(best checkpoint (\S+)\)", result.stdout)
    nll, bpd, checkpoint = printed[0]
    # the training run tested 2 batches of 16 (debug=smoke): evaluate the same images
    smoke_fid = ["fid.num_samples=4", "fid.batch_size=4", "fid.num_real=500", "fid.classifier.epochs=2",
                 "fid.classifier.train_images=4000"]  # debug=smoke's: its classifier is cached already
    evaluated = run("eval.py", f"ckpt_path={checkpoint}", "+trainer.limit_test_batches=2", "data.eval_batch_size=16",
                    "logger=csv", *smoke_fid, f"hydra.run.dir={tmp_path}")
    assert_ok(evaluated)
    assert f"Test NLL: {nll} nats/image, {bpd} bits/dim" in evaluated.stdout
    assert re.search(r"FID \(mnist-2level-cnn, test acc \d+\.\d%\): \d", evaluated.stdout)
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["task"] == "eval" and record["model"] == "pixelcnn" and record["dataset"] == "binarized_mnist"
    assert f"{record['test_nll']:.2f}" == nll
