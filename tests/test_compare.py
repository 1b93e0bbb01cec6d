"""The comparison: exact aggregates over seeds, grouping, time to target, verdict words, malformed
records skipped, several folders; the files at the end of a real 2 x 2 multirun (and on W&B);
`python -m pixel_lightning.compare`; eval.py on a run's checkpoint."""

import csv
import json
import re
import statistics
import subprocess
import sys

import pytest
from PIL import Image
from support import REPO, real_data_dir, wandb_logged, wandb_records
from test_cli import assert_ok, run

from pixel_lightning.evaluation.compare import OUTPUTS, comparison_rows, main, read_records
from pixel_lightning.evaluation.compare.aggregate import Stat, aggregate, time_to_target, with_times_to_target
from pixel_lightning.evaluation.compare.tables import kid_precision
from pixel_lightning.evaluation.compare.verdict import judge, ranks, verdict_rows
from pixel_lightning.images import make_grid, save_png
from pixel_lightning.records import blank_record, write_record

LABEL = "FID (mnist-2level-cnn, test acc 96.0%)"


def make_run(folder, name, grid_level=None, model=None, **fields):
    identity = {"model": model or name, "dataset": "binarized_mnist", "task": "train", "status": "finished"}
    record = blank_record(**identity | fields)
    if grid_level is not None:
        import torch

        save_png(make_grid(torch.full((4, 1, 28, 28), grid_level), 2), folder / name / "samples" / "scored.png")
        record["sample_grid"] = "samples/scored.png"
    write_record(folder / name, record)


def curve(*points):
    """(time_s, images, bpd or kid) triples -> curve points."""
    return [{"time_s": t, "images": i, "steps": i // 10, "bpd": v} for t, i, v in points]


def test_compare_orders_rows_and_computes_relative_speeds(tmp_path):
    measured = {"fid_label": LABEL, "sample_time_per_image_s": 0.1, "epochs": 1.0, "steps": 10, "params": 100}
    make_run(
        tmp_path,
        "pixelcnn",
        1,
        train_time_s=60.0,
        train_images_per_s=100.0,
        test_nll=90.0,
        test_bpd=0.17,
        fid=20.0,
        **measured,
    )
    make_run(
        tmp_path,
        "row_lstm",
        0,
        train_time_s=60.0,
        train_images_per_s=50.0,
        test_nll=85.0,
        test_bpd=0.16,
        fid=30.0,
        **measured,
    )
    make_run(tmp_path, "dcgan", 1, train_time_s=60.0, train_images_per_s=200.0, fid=5.0, **measured)  # no likelihood
    make_run(tmp_path / "sweep", "diagonal_bilstm", status="failed", error="RuntimeError: out of memory")

    rows = comparison_rows(read_records(tmp_path))
    assert [row["model"] for row in rows] == ["row_lstm", "pixelcnn", "dcgan", "diagonal_bilstm"]
    assert [row["relative_speed"] for row in rows] == [0.25, 0.5, 1.0, None]  # the GAN is the fastest
    assert rows[3]["run_dir"] == "sweep/diagonal_bilstm"

    main([str(tmp_path)])
    assert all((tmp_path / name).is_file() for name in OUTPUTS)
    runs = (tmp_path / "comparison.md").read_text().split("## Runs")[1].strip().splitlines()
    assert len(runs) == 2 + 4 and LABEL in runs[0] and "| FID |" not in runs[0]
    cells = [line.split(" | ") for line in runs[2:]]
    speed = runs[0].split(" | ").index("training speed")
    assert [c[speed] for c in cells] == ["0.25x", "0.50x", "1.00x", "–"]
    assert "failed: RuntimeError: out of memory" in runs[5]
    picture = Image.open(tmp_path / "samples_side_by_side.png")
    grid_side = 5 * (2 * 28 + 3 * 2)  # 62 pixels, 5 times: at least 256
    assert picture.height == 8 + 3 * (24 + 18 + grid_side + 16)  # three models, one row each, label and seed above
    assert Image.open(tmp_path / "comparison.png").size[0] == 1200


def test_seeds_aggregate_to_exact_mean_std_n_grouped_by_overridden_settings(tmp_path):
    bpds, kids = {0: 0.20, 1: 0.22, 2: 0.27}, {0: 0.01, 1: 0.03, 2: 0.02}
    for seed in (0, 1, 2):
        make_run(
            tmp_path,
            f"row_{seed}",
            model="row_lstm",
            seed=seed,
            test_bpd=bpds[seed],
            kid=kids[seed],
            overrides=["experiment=compare_mnist", "model=row_lstm", f"seed={seed}"],
            curve=curve((10.0, 100, 0.5), (20.0, 200, bpds[seed])),
        )
    make_run(
        tmp_path,
        "row_wide",
        model="row_lstm",
        seed=0,
        test_bpd=0.19,
        kid=0.005,
        overrides=["experiment=compare_mnist", "model=row_lstm", "seed=0", "model.net.hidden=32"],
    )
    make_run(
        tmp_path,
        "row_failed",
        model="row_lstm",
        seed=3,
        status="failed",
        error="Training diverged at step 9",
        overrides=["experiment=compare_mnist", "model=row_lstm", "seed=3"],
    )
    rows = with_times_to_target(comparison_rows(read_records(tmp_path)), {"binarized_mnist": {"bpd": 0.3, "kid": None}})
    groups = aggregate(rows)
    default, wide = sorted(groups, key=lambda group: len(group["settings"]))
    assert default["settings"] == ("experiment=compare_mnist",)
    assert wide["settings"] == ("experiment=compare_mnist", "model.net.hidden=32") and wide["n"] == 1
    assert (default["n"], len(default["runs"]), default["failed"], default["diverged"]) == (3, 4, 1, 1)
    assert default["test_bpd"] == Stat(statistics.fmean(bpds.values()), statistics.stdev(bpds.values()), 3)
    assert default["kid"].mean == pytest.approx(0.02) and default["kid"].std == pytest.approx(0.01)
    assert wide["test_bpd"] == Stat(0.19, None, 1)
    # time to 0.3 bits/dim: from 0.5 at 10 s down to the final value at 20 s, linearly
    expected = [10 + 10 * (0.5 - 0.3) / (0.5 - bpds[seed]) for seed in (0, 1, 2)]
    assert default["time_to_bpd_s"].mean == pytest.approx(statistics.fmean(expected))

    main([str(tmp_path)])
    text = (tmp_path / "comparison.md").read_text()
    row = next(
        line
        for line in text.splitlines()
        if line.startswith("| row_lstm | binarized_mnist | experiment=compare_mnist | 3 (+1")
    )
    assert f"{default['test_bpd'].mean:.4f} ± {default['test_bpd'].std:.4f}" in row
    assert "diverged 1/4" in text
    with open(tmp_path / "comparison.csv") as stream:
        written = list(csv.DictReader(stream))
    assert [line["row"] for line in written] == ["run"] * 5 + ["mean", "std"] * 2
    mean_row = next(line for line in written if line["row"] == "mean" and line["n"] == "3")
    std_row = next(line for line in written if line["row"] == "std" and line["n"] == "3")
    assert float(mean_row["test_bpd"]) == pytest.approx(default["test_bpd"].mean)
    assert float(std_row["test_bpd"]) == pytest.approx(default["test_bpd"].std)


def test_time_to_target_interpolates_on_both_axes_and_says_not_reached():
    points = curve((10.0, 1000, 0.40), (20.0, 3000, 0.30), (40.0, 5000, 0.20))
    assert time_to_target(points, "bpd", 0.25) == pytest.approx(30.0)  # halfway from 0.30 to 0.20
    assert time_to_target(points, "bpd", 0.25, x="images") == pytest.approx(4000)
    assert time_to_target(points, "bpd", 0.45) == 10.0  # already there at the first point
    assert time_to_target(points, "bpd", 0.10) is None
    rows = with_times_to_target(
        [blank_record(model="m", dataset="d", status="finished", curve=points)], {"d": {"bpd": 0.10, "kid": 0.5}}
    )
    assert rows[0]["time_to_bpd_s"] == "not reached" and rows[0]["time_to_kid_s"] is None  # no KID curve
    assert aggregate(rows)[0]["time_to_bpd_s"] == "not reached"


def test_verdict_words_follow_the_measured_order_and_say_not_separated_when_intervals_overlap():
    words = ("fast", "medium", "slow")
    separated = ranks({"a": Stat(1.0, 0.1, 3), "b": Stat(2.0, 0.1, 3), "c": Stat(3.0, 0.1, 3)}, words)
    assert {name: entry["word"] for name, entry in separated.items()} == {"a": "fast", "b": "medium", "c": "slow"}
    assert all(len(entry["possible"]) == 1 for entry in separated.values())
    overlapping = ranks({"a": Stat(1.0, 0.1, 3), "b": Stat(2.0, 0.8, 3), "c": Stat(2.5, 0.1, 3)}, words)
    assert overlapping["b"]["not_separated_from"] == ["c"] and overlapping["b"]["possible"] == {"medium", "slow"}
    assert judge(("slow",), overlapping["b"]["possible"]) == "not separated"
    assert judge(("fast",), overlapping["b"]["possible"]) == "disagrees"
    assert judge(("fast",), overlapping["a"]["possible"]) == "agrees"

    def group(model, time_s, kid):
        return {
            "model": model,
            "time_to_bpd_s": time_s,
            "final_curve_bpd": Stat(0.2, None, 3),
            "time_to_kid_s": None,
            "kid": kid,
            "diverged": 0,
            "n": 3,
        }

    verdict = verdict_rows(
        [
            group("row_lstm", Stat(30.0, 1.0, 3), Stat(0.02, 0.001, 3)),
            group("diagonal_bilstm", Stat(90.0, 1.0, 3), Stat(0.01, 0.001, 3)),
            group("pixelcnn", Stat(60.0, 1.0, 3), Stat(0.03, 0.001, 3)),
        ]
    )
    assert (verdict["time"]["row_lstm"]["word"], verdict["time"]["row_lstm"]["judgement"]) == ("fast", "agrees")
    assert (verdict["time"]["diagonal_bilstm"]["word"], verdict["time"]["diagonal_bilstm"]["judgement"]) == (
        "slow",
        "disagrees",
    )  # the source says medium
    assert (verdict["quality"]["diagonal_bilstm"]["word"], verdict["quality"]["diagonal_bilstm"]["judgement"]) == (
        "high",
        "agrees",
    )  # medium-high
    assert verdict["quality"]["pixelcnn"]["claim"] is None  # the source makes no claim


def test_kid_precision_compares_the_subset_std_with_a_third_of_the_smallest_gap():
    def group(mean, subset_std):
        return {"dataset": "d", "kid": Stat(mean, 0.001, 3), "runs": [{"kid_std": subset_std}]}

    (line,) = kid_precision([group(0.10, 0.002), group(0.13, 0.009), group(0.20, 0.001)])
    assert "is under a third" in line
    (line,) = kid_precision([group(0.10, 0.002), group(0.13, 0.011), group(0.20, 0.001)])
    assert "is not under a third" in line
    assert kid_precision([group(0.10, 0.002)]) == []


MALFORMED = {
    "invalid JSON": ('{"model": "x",', "not valid JSON"),
    "a missing field": (json.dumps({"model": "x", "dataset": "binarized_mnist"}), "no status"),
    "a string where a number belongs": (
        json.dumps({"model": "x", "dataset": "d", "status": "finished", "test_bpd": "0.2"}),
        "test_bpd is a str, not a number",
    ),
    "a list instead of an object": (json.dumps([{"model": "x"}]), "a JSON list where an object belongs"),
    "a huge number": (
        '{"model": "x", "dataset": "d", "status": "finished", "train_time_s": 1e999}',
        "train_time_s is inf",
    ),
    "a huge integer": (
        '{"model": "x", "dataset": "d", "status": "finished", "steps": 1' + "0" * 400 + "}",
        "steps has 401 digits",
    ),
    "a broken curve": (
        json.dumps({"model": "x", "dataset": "d", "status": "finished", "curve": [{"time_s": "1"}]}),
        "curve[0].time_s is a str",
    ),
    "a curve whose time runs backwards": (
        json.dumps(
            {
                "model": "x",
                "dataset": "d",
                "status": "finished",
                "curve": [{"time_s": 2.0, "images": 10, "bpd": 0.3}, {"time_s": 1.0, "images": 20, "bpd": 0.2}],
            }
        ),
        "curve[1].time_s is 1.0, below the 2.0 of the point before",
    ),
    "a curve with negative images": (
        json.dumps(
            {"model": "x", "dataset": "d", "status": "finished", "curve": [{"time_s": 2.0, "images": -5, "bpd": 0.3}]}
        ),
        "curve[0].images is -5, below 0",
    ),
}


@pytest.mark.parametrize("malformation", MALFORMED)
def test_a_malformed_record_is_skipped_with_a_warning_naming_it_and_why(tmp_path, capsys, malformation):
    text, why = MALFORMED[malformation]
    make_run(tmp_path, "good", test_bpd=0.2, train_time_s=10.0)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "record.json").write_text(text)
    assert [record["model"] for record in read_records(tmp_path)] == ["good"]
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: skipped {tmp_path / 'bad' / 'record.json'}: ")
    assert why in warnings[0]


def test_a_folder_with_a_malformed_record_still_gets_every_file(tmp_path, capsys):
    make_run(tmp_path, "good", test_bpd=0.2, train_time_s=10.0, curve=curve((1.0, 10, 0.3), (2.0, 20, 0.2)))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "record.json").write_text(MALFORMED["a huge number"][0])
    main([str(tmp_path)])
    assert "warning: skipped" in capsys.readouterr().err
    assert all((tmp_path / name).is_file() for name in OUTPUTS)
    assert (tmp_path / "comparison.md").read_text().count("| good | binarized_mnist |") == 3  # models, times, runs


def test_nothing_valid_left_is_one_paragraph_and_exit_2(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "record.json").write_text("[]")
    with pytest.raises(SystemExit) as exit_status:
        main([str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_status.value.code == 2 and "No valid record.json under" in err and "Traceback" not in err


def test_compare_on_a_folder_without_records_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main([str(tmp_path)])
    assert exit_status.value.code == 2 and "No valid record.json under" in capsys.readouterr().err


def test_compare_takes_several_folders_and_reads_no_grid_outside_a_run_or_that_is_no_picture(tmp_path, capsys):
    make_run(tmp_path / "sweep1", "0", 1, model="row_lstm", seed=0, test_bpd=0.2)
    make_run(tmp_path / "sweep2", "0", 1, model="row_lstm", seed=1, test_bpd=0.3)
    make_run(tmp_path / "sweep2", "1", 1, model="row_lstm", seed=2, test_bpd=0.25)
    (tmp_path / "sweep1" / "0" / "samples" / "scored.png").write_text("not a picture")
    outside = tmp_path / "secret.png"
    outside.write_bytes((tmp_path / "sweep2" / "1" / "samples" / "scored.png").read_bytes())
    record = json.loads((tmp_path / "sweep2" / "0" / "record.json").read_text())
    (tmp_path / "sweep2" / "0" / "record.json").write_text(json.dumps(record | {"sample_grid": "../../secret.png"}))
    with pytest.raises(SystemExit):
        main([str(tmp_path / "sweep1"), str(tmp_path / "sweep2")])  # where to write?
    assert "--out" in capsys.readouterr().err
    main([str(tmp_path / "sweep1"), str(tmp_path / "sweep2"), "--out", str(tmp_path / "both")])
    err = capsys.readouterr().err
    assert "../../secret.png is outside its run folder" in err and "cannot identify image file" in err
    text = (tmp_path / "both" / "comparison.md").read_text()
    assert "| row_lstm | binarized_mnist | – | 3 | 0.2500 ± 0.0500 |" in text  # one group across the sweeps
    picture = Image.open(tmp_path / "both" / "samples_side_by_side.png")
    assert picture.height == 8 + 24 + 18 + 5 * 62 + 16 and picture.width < 2 * 5 * 62  # sweep2/1's grid only


@pytest.fixture(scope="module")
def smoke_multirun(tmp_path_factory):
    """`python train.py -m model=row_lstm,dcgan seed=0,1 debug=smoke`, a curve point every 2 batches, W&B offline."""
    if real_data_dir() is None:
        pytest.skip("PIXEL_DATA_DIR is not set: point it at a folder with the datasets (e.g. ../shared/data)")
    sweep = tmp_path_factory.mktemp("sweep")
    result = run(
        "train.py",
        "-m",
        "model=row_lstm,dcgan",
        "seed=0,1",
        "debug=smoke",
        "curve.every_images=32",
        f"hydra.sweep.dir={sweep}",
        env={"WANDB_MODE": "offline"},
    )
    assert_ok(result)
    return sweep, result


def test_a_2x2_multirun_ends_with_every_comparison_file_and_a_wandb_run_holding_table_curves_and_verdict(
    smoke_multirun,
):
    sweep, result = smoke_multirun
    assert all((sweep / name).is_file() for name in OUTPUTS)
    text = (sweep / "comparison.md").read_text()
    models = text.split("## Models")[1].split("## Rankings")[0]
    assert re.search(r"\| row_lstm \| binarized_mnist \| .* \| 2 \| \d\.\d{4} ± \d\.\d{4} \|", models)
    assert re.search(r"\| dcgan \| binarized_mnist \| .* \| 2 \| – \| [\d.e+]+ ± [\d.e+]+ \|", models)  # KID
    for section in ("## Rankings", "## Time to quality", "## The source table, measured", "## Runs"):
        assert section in text
    assert re.search(r"\| training time \(time to target\) \| [\d±. ]+ s: \*\*(fast|slow)\*\*", text)
    for job, model, key in (
        ("0", "row_lstm", "bpd"),
        ("1", "row_lstm", "bpd"),
        ("2", "dcgan", "kid"),
        ("3", "dcgan", "kid"),
    ):
        record = json.loads((sweep / job / "record.json").read_text())
        assert record["model"] == model and record["status"] == "finished" and record["params"] > 0
        assert all(
            record[field] is not None
            for field in ("train_images_per_s", "fid", "kid", "kid_std", "classes_covered", "sample_time_per_image_s")
        )
        assert [point["images"] for point in record["curve"]] == [32, 64, 80]  # every 2 batches of 16, and the end
        assert all(point[key] > 0 for point in record["curve"]) and record["curve"][-1]["steps"] == record["steps"]
        logged = wandb_logged(next((sweep / job / "wandb").glob("offline-run-*")))
        assert {f"curve/{key}", "curve/time_s", "curve/images"} <= logged["history"]
        assert "record/kid" in logged["summary"]
    assert "Comparison of 4 runs" in result.stdout
    (comparison_run,) = (sweep / "wandb").glob("offline-run-*")
    logged = wandb_logged(comparison_run)
    logged_keys = {key.split("/")[0] for key in logged["history"]}  # media are logged as nested keys
    assert {
        "comparison",
        "comparison_models",
        "curves",
        "verdict",
        "comparison_plot",
        "samples_side_by_side",
    } <= logged_keys and logged["exited"]
    groups = {record.run.run_group for record in wandb_records(comparison_run) if record.HasField("run")}
    assert groups == {"binarized_mnist"}  # the jobs' group


def test_compare_rebuilds_the_same_files(smoke_multirun, tmp_path):
    sweep, _ = smoke_multirun
    before = {name: (sweep / name).read_bytes() for name in ("comparison.md", "comparison.csv")}
    result = subprocess.run(
        [sys.executable, "-m", "pixel_lightning.compare", str(sweep)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert {name: (sweep / name).read_bytes() for name in before} == before
    assert Image.open(sweep / "samples_side_by_side.png").size[0] <= 1200


def test_eval_reproduces_the_test_nll_printed_by_training(smoke_multirun, tmp_path):
    _, result = smoke_multirun
    printed = re.findall(r"Test NLL: (\S+) nats/image, (\S+) bits/dim \(best checkpoint (\S+)\)", result.stdout)
    nll, bpd, checkpoint = printed[0]
    # the training run tested 2 batches of 16 (debug=smoke): evaluate the same images
    smoke_fid = [
        "fid.num_samples=4",
        "fid.batch_size=4",
        "fid.num_real=500",
        "fid.classifier.epochs=2",
        "fid.classifier.train_images=4000",
    ]  # debug=smoke's: its classifier is cached already
    evaluated = run(
        "eval.py",
        f"ckpt_path={checkpoint}",
        "+trainer.limit_test_batches=2",
        "data.eval_batch_size=16",
        "logger=csv",
        *smoke_fid,
        f"hydra.run.dir={tmp_path}",
    )
    assert_ok(evaluated)
    assert f"Test NLL: {nll} nats/image, {bpd} bits/dim" in evaluated.stdout
    assert re.search(r"FID \(mnist-2level-cnn, test acc \d+\.\d%\): \d", evaluated.stdout)
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["task"] == "eval" and record["model"] == "row_lstm" and record["dataset"] == "binarized_mnist"
    assert f"{record['test_nll']:.2f}" == nll
