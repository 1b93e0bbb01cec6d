"""train.py and sample.py end to end, in subprocesses, as a user runs them.

One smoke training run (module-scoped) feeds the checks of its outputs, sampling, completion
and resuming. User mistakes must give a one-paragraph message and no traceback.
"""

import fractions
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from support import REPO, assert_fed_alike, real_data_dir, requires_data, tiny_model, wandb_logged

from pixel_lightning.records import read_record


def run(script: str, *overrides: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | (env or {})
    return subprocess.run(
        [sys.executable, str(REPO / script), *overrides],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


def assert_user_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """`python train.py debug=smoke` with the default wandb logger (offline)."""
    if real_data_dir() is None:
        pytest.skip("PIXEL_DATA_DIR is not set: point it at a folder with the datasets (e.g. ../shared/data)")
    out = tmp_path_factory.mktemp("smoke")
    result = run("train.py", "debug=smoke", f"hydra.run.dir={out}", env={"WANDB_MODE": "offline"})
    assert_ok(result)
    return out, result


def test_smoke_training_prints_test_metrics_and_leaves_its_outputs(smoke_run):
    out, result = smoke_run
    assert "Test NLL:" in result.stdout and "bits/dim" in result.stdout
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert len(list((out / "checkpoints").glob("epoch_*.ckpt"))) == 1
    grids = sorted((out / "samples").glob("*.png"))
    assert [g.name for g in grids] == ["epoch_000.png", "scored.png"]  # scored.png: the run record's samples
    assert Image.open(grids[0]).size == (2 * 5 * 28 + 3 * 2, 2 * 5 * 28 + 3 * 2)  # 4 samples, 2x2, x5 to >= 256 px


def test_wandb_offline_run_holds_the_config_the_metrics_and_the_image(smoke_run):
    out, _ = smoke_run
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "exactly one finished offline run per job"
    logged_grids = list((runs[0] / "files" / "media" / "images").glob("samples_*.png"))
    assert logged_grids, "the sample grid file is missing"
    assert Image.open(logged_grids[0]).size == (2 * 28 + 3 * 2, 2 * 28 + 3 * 2)  # W&B keeps the native size
    logged = wandb_logged(runs[0])
    assert logged["exited"] and logged["exit_code"] == 0, "the run was not finished as a success"
    assert {"data", "model", "trainer", "optimizer"} <= logged["config"]  # the resolved config
    assert {"samples", "train/loss", "val/nll", "val/bpd", "test/nll", "test/bpd"} <= logged["history"]
    nll, bpd = float(logged["summary"]["test/nll"]), float(logged["summary"]["test/bpd"])
    assert nll == pytest.approx(bpd * 784 * np.log(2), rel=1e-5)


def test_the_record_holds_the_printed_and_logged_test_nll(smoke_run):
    out, result = smoke_run
    record = read_record(out / "record.json")
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("Test NLL:")]
    assert line.startswith(f"Test NLL: {record['test_nll']:.2f} nats/image, {record['test_bpd']:.4f} bits/dim ("), line
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    summary = wandb_logged(run_dir)["summary"]
    assert (float(summary["test/nll"]), float(summary["test/bpd"])) == (record["test_nll"], record["test_bpd"])
    assert record["test_bpd"] == pytest.approx(record["test_nll"] / (784 * np.log(2)), rel=1e-6)


def test_checkpoint_loads_weights_only_and_scores_like_the_run(smoke_run):
    out, _ = smoke_run
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["data"]["levels"] == 2


def test_sample_writes_grid_and_levels(smoke_run, tmp_path):
    out, _ = smoke_run
    result = run(
        "sample.py",
        f"ckpt_path={out}/checkpoints/last.ckpt",
        "num_samples=4",
        "save_npy=true",
        f"hydra.run.dir={tmp_path}",
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert_ok(result)
    # Sampling loads no training stack: importing Lightning would be most of a cached run's time.
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time")}
    assert "torch" in imported and not {"pytorch_lightning", "lightning_fabric", "torchmetrics", "wandb"} & imported
    levels = np.load(tmp_path / "samples.npy")
    assert levels.shape == (4, 1, 28, 28) and set(np.unique(levels)) <= {0, 1}
    assert (tmp_path / "samples.png").is_file()
    # The default is the cached sampler; the naive reference draws the same images.
    naive = run(
        "sample.py",
        f"ckpt_path={out}/checkpoints/last.ckpt",
        "num_samples=4",
        "save_npy=true",
        "method=naive",
        f"hydra.run.dir={tmp_path}/naive",
    )
    assert_ok(naive)
    assert (np.load(tmp_path / "naive" / "samples.npy") == levels).all()
    assert_user_error(
        run("sample.py", f"ckpt_path={out}/checkpoints/last.ckpt", "method=fast", f"hydra.run.dir={tmp_path}/bad"),
        "method must be cached",
        "but it is fast",
    )


def test_sample_py_draws_the_same_levels_cached_and_naive_for_every_architecture(tmp_path):
    """One multirun of sample.py over a checkpoint of every net with a cached step (test_sampling.CASES,
    random weights, RGB: channel groups are the harder case) and both methods: each checkpoint's .npy
    levels are equal."""
    from test_checkpoint import model_checkpoint
    from test_sampling import CASES

    checkpoints = []
    for index, (channels, levels, arch, net) in enumerate(case for case in CASES if case[0] == 3):
        torch.manual_seed(index)
        model = tiny_model(channels, levels, height=3, width=4, arch=arch, layers=2, **net)
        checkpoints.append(tmp_path / f"{index}.ckpt")
        torch.save(model_checkpoint(model), checkpoints[-1])
    result = run(
        "tests/recording_draws.py",
        "sample.py",
        "-m",
        f"ckpt_path={','.join(map(str, checkpoints))}",
        "method=cached,naive",
        "num_samples=4",
        "save_npy=true",
        f"hydra.sweep.dir={tmp_path}/sweep",
    )
    assert_ok(result)
    drawn, fed = {}, {}
    for job in (tmp_path / "sweep").iterdir():
        if job.is_dir():
            overrides = dict(o.split("=", 1) for o in OmegaConf.load(job / ".hydra" / "overrides.yaml"))
            key = overrides["ckpt_path"], overrides["method"]
            drawn[key], fed[key] = np.load(job / "samples.npy"), torch.load(job / "draws.pt", weights_only=True)
    assert len(drawn) == 2 * len(checkpoints)
    for path in map(str, checkpoints):
        cached, naive = drawn[path, "cached"], drawn[path, "naive"]
        assert (cached == naive).all(), f"{path}: {(cached != naive).sum()} of {cached.size} levels differ"
        # Every draw fed the same outputs (float32 here: to rounding), which lucky draws cannot fake.
        assert_fed_alike(fed[path, "naive"], fed[path, "cached"], atol=1e-5, rtol=1e-4)
        assert len({image.tobytes() for image in cached}) == 4  # real draws, not a constant image


def test_completion_keeps_the_visible_half_of_test_images(smoke_run, tmp_path):
    out, _ = smoke_run
    result = run(
        "sample.py",
        f"ckpt_path={out}/checkpoints/last.ckpt",
        "mode=complete",
        "completion.num_images=2",
        "completion.samples_per_image=2",
        "save_npy=true",
        f"hydra.run.dir={tmp_path}",
    )
    assert_ok(result)
    rows = np.load(tmp_path / "completes.npy").reshape(2, 4, 1, 28, 28)  # [occluded, 2 completions, original]
    for occluded, first, second, original in rows:
        assert (occluded[:, 14:] == 0).all() and (occluded[:, :14] == original[:, :14]).all()
        assert (first[:, :14] == original[:, :14]).all() and (second[:, :14] == original[:, :14]).all()


def test_training_resumes_from_the_last_checkpoint(smoke_run, tmp_path):
    out, _ = smoke_run
    result = run(
        "train.py",
        "debug=smoke",
        "logger=csv",
        "trainer.max_epochs=2",
        "test=false",
        f"ckpt_path={out}/checkpoints/last.ckpt",
        f"hydra.run.dir={tmp_path}",
    )
    assert_ok(result)
    resumed = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 10  # 5 batches of epoch 0 kept, 5 more


def test_trust_checkpoint_is_taken_by_every_entry_point_that_suggests_it(smoke_run, tmp_path):
    out, _ = smoke_run
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["note"] = fractions.Fraction(1, 3)  # a Python object: refused unless trusted (test_checkpoint.py)
    pickled = tmp_path / "pickled.ckpt"
    torch.save(checkpoint, pickled)
    resume = (
        "debug=smoke",
        "logger=csv",
        "test=false",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "callbacks.sample_grid.num_samples=1",
        f"ckpt_path={pickled}",
    )
    assert_ok(run("train.py", *resume, "trust_checkpoint=true", f"hydra.run.dir={tmp_path}/trusted"))
    assert torch.load(tmp_path / "trusted" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    assert_ok(
        run(
            "sample.py",
            f"ckpt_path={pickled}",
            "num_samples=1",
            "trust_checkpoint=true",
            f"hydra.run.dir={tmp_path}/sampled",
        )
    )


@requires_data
def test_user_mistakes_get_one_paragraph_and_no_traceback(tmp_path):
    assert_user_error(run("train.py", "model=nope", f"hydra.run.dir={tmp_path}/a"), "model/nope", "pixelcnn")
    assert_user_error(  # download=false: the test must not depend on the network being absent
        run(
            "train.py",
            "logger=csv",
            "data.download=false",
            f"hydra.run.dir={tmp_path}/b",
            env={"PIXEL_DATA_DIR": "/nonexistent"},
        ),
        "binarized_mnist_train.amat",
        "/nonexistent",
        "PIXEL_DATA_DIR",
    )
    assert not Path("/nonexistent").exists()
    assert_user_error(
        run("sample.py", "ckpt_path=/nonexistent", f"hydra.run.dir={tmp_path}/c"), "No checkpoint file", "ckpt_path="
    )
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert_user_error(run("train.py", f"ckpt_path={bad}", f"hydra.run.dir={tmp_path}/d"), "truncated or corrupt")


def test_an_output_folder_that_cannot_be_made_is_one_paragraph_not_hydras_traceback(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run("sample.py", "ckpt_path=x.ckpt", f"hydra.run.dir={blocker}/run", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 2
    assert_user_error(
        result,
        f"error: Could not make or write the output folder (hydra.run.dir) {blocker}/run: Not a "
        "directory. Set hydra.run.dir=<a writable folder>",
    )


def compose_with_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="sample", overrides=["ckpt_path=x.ckpt", *overrides], return_hydra_config=True)


@pytest.mark.parametrize(
    "override, key", [("hydra.sweep.dir={}/sweep", "hydra.sweep.dir"), ("paths.log_dir={}/logs", "hydra.sweep.dir")]
)
def test_a_sweep_folder_that_cannot_be_made_is_one_paragraph(override, key, tmp_path, capsys):
    from pixel_lightning.cli import JobFolders

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as stop:
        JobFolders().on_multirun_start(compose_with_hydra([override.format(blocker)]))
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: Could not make or write the output folder ({key}) {blocker}/")
    assert ": Not a directory. Set hydra.sweep.dir=<a writable folder>, or paths.log_dir=" in error


def test_the_failed_jobs_of_a_sweep_are_found_by_the_files_they_leave(tmp_path, monkeypatch):
    """Under submitit the jobs run in other processes: the sweep learns of their failures from their
    failure.txt, and not from one that an earlier sweep left in the same folder."""
    from pixel_lightning import cli

    monkeypatch.setattr(cli, "failed_jobs", [])
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / "failure.txt").write_text("an earlier sweep's job 0 failed\n")
    config = compose_with_hydra(["hydra.sweep.dir=sweep"])  # relative, as by default
    folders = cli.JobFolders()
    folders.on_multirun_start(config)
    for job, failed in (("1", True), ("2", False)):  # what two jobs of this sweep leave
        (sweep / job).mkdir()
        if failed:
            cli.write_failure(sweep / job, "UserError: ...")
    folders.on_multirun_end(config)
    assert cli.failed_jobs == [str(sweep / "1")]  # absolute, like run_job's


def test_a_multirun_whose_comparison_cannot_be_written_still_lists_its_failed_jobs(tmp_path, monkeypatch, capsys):
    """The comparison ends the process itself (exit 2) when it cannot be written; the failed jobs are
    listed all the same, once."""
    from pixel_lightning import cli
    from pixel_lightning.commands import run_hydra
    from pixel_lightning.evaluation.compare import MultirunComparison

    monkeypatch.setattr(cli, "failed_jobs", [])
    monkeypatch.setattr(sys, "argv", ["train.py", "-m"])
    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        (sweep / job).mkdir(parents=True)
    cli.write_failure(sweep / "0", "UserError: ...")
    (sweep / "1" / "record.json").write_text("{not json")  # the only record, unreadable: nothing to compare
    config = compose_with_hydra([f"hydra.sweep.dir={sweep}"])

    def multirun_end():  # Hydra's end of a multirun: the callbacks of conf/hydra/default.yaml, in order
        cli.JobFolders().on_multirun_end(config)
        MultirunComparison(wandb=False).on_multirun_end(config)

    with pytest.raises(SystemExit) as stop:
        run_hydra(multirun_end)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "No valid record.json under" in error
    assert error.endswith(f"error: 1 job(s) failed; their failure.txt says why:\n  {sweep / '0'}\n")


@requires_data
def test_a_diverging_run_stops_with_the_message_and_its_wandb_run_is_marked_failed(tmp_path):
    result = run(
        "train.py", "debug=smoke", "optimizer.lr=1e3", f"hydra.run.dir={tmp_path}", env={"WANDB_MODE": "offline"}
    )
    assert result.returncode == 2
    assert_user_error(
        result, "Training diverged at step", "returned loss = nan", "optimizer.lr=100", "trainer.gradient_clip_val=0.5"
    )
    assert "Training diverged at step" in (tmp_path / "failure.txt").read_text()
    assert not list(tmp_path.glob("checkpoints/*.ckpt")), "a NaN model was saved"
    (wandb_run,) = (tmp_path / "wandb").glob("offline-run-*")
    logged = wandb_logged(wandb_run)
    assert logged["exited"] and logged["exit_code"] == 1, "the W&B run of a failed job must exit non-zero"


@requires_data
def test_a_failing_multirun_job_is_recorded_and_the_others_finish(tmp_path):
    result = run(
        "train.py",
        "-m",
        "debug=smoke",
        "logger=csv",
        "callbacks.sample_grid.num_samples=1",
        "trainer.limit_train_batches=1",
        "optimizer.lr=-1,0.001",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "optimizer.lr must be a number above 0, but it is -1." in (tmp_path / "0" / "failure.txt").read_text()
    assert not (tmp_path / "1" / "failure.txt").exists()
    assert (tmp_path / "1" / "checkpoints" / "last.ckpt").is_file()
    assert "1 job(s) failed" in result.stderr


@requires_data
@pytest.mark.parametrize(
    # spatial_lstm takes minutes: naive sampling
    "model",
    ["row_lstm", "diagonal_bilstm", pytest.param("spatial_lstm", marks=pytest.mark.slow)],
)
def test_recurrent_models_train_and_sample_through_the_scripts(model, tmp_path):
    result = run("train.py", "debug=smoke", f"model={model}", "logger=csv", f"hydra.run.dir={tmp_path}/train")
    assert_ok(result)
    assert "Test NLL:" in result.stdout
    metrics = (tmp_path / "train" / "csv" / "version_0" / "metrics.csv").read_text()
    assert "test/nll" in metrics and "val/bpd" in metrics
    assert (tmp_path / "train" / "samples" / "epoch_000.png").is_file()
    result = run(
        "sample.py",
        f"ckpt_path={tmp_path}/train/checkpoints/last.ckpt",
        "num_samples=2",
        "save_npy=true",
        f"hydra.run.dir={tmp_path}/sample",
    )
    assert_ok(result)
    assert np.load(tmp_path / "sample" / "samples.npy").shape == (2, 1, 28, 28)


def test_without_a_terminal_progress_is_printed_as_plain_lines(smoke_run):
    _, result = smoke_run  # stdout is a pipe here, as under SLURM or nohup
    assert re.search(r"^epoch 1/1 step 1/5 loss \d+\.\d{4} \d+\.\d images/s ETA \d+:\d\d:\d\d$", result.stdout, re.M)
    assert re.search(r"^epoch 1/1 step 5/5 loss \d+\.\d{4} \d+\.\d images/s ETA 0:00:00$", result.stdout, re.M)
    assert re.search(r"^epoch 1/1 validation: val/bpd \d\.\d{4} val/nll \d+\.\d{4}$", result.stdout, re.M)
    assert "it/s" not in result.stdout  # no Rich bar


@pytest.mark.slow
@requires_data
def test_only_rank_zero_prints_the_test_line_under_ddp(tmp_path):
    result = run(
        "train.py",
        "debug=smoke",
        "logger=csv",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "callbacks.sample_grid.num_samples=1",
        f"hydra.run.dir={tmp_path}",
    )
    assert_ok(result)
    assert result.stdout.count("Test NLL:") == 1, result.stdout[-2000:]
