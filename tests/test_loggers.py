"""TensorBoard and MLflow, read back: the sample grids, the learning curve and a multirun's
comparison reach each of them (TensorBoard's EventAccumulator, MLflow's client)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image
from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger
from support import real_data_dir, tiny_model
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_cli import assert_ok, run
from test_compare import curve, make_run
from test_configs import compose_train

from pixel_lightning.callbacks import SampleGrid
from pixel_lightning.callbacks.learning_curve import log_point
from pixel_lightning.errors import UserError
from pixel_lightning.evaluation.compare import MultirunComparison
from pixel_lightning.images import make_grid
from pixel_lightning.loggers import instantiate_loggers


def events(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def tensorboard_image(accumulator: EventAccumulator, tag: str) -> np.ndarray:
    (event,) = accumulator.Images(tag)
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))


def mlflow_image(client: MlflowClient, run_id: str, path: str, folder: Path) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)  # MLflow before 2.17 does not create it
    return np.asarray(Image.open(client.download_artifacts(run_id, path, str(folder))))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite MLflow store for the module (creating one takes seconds): its URI and artifact folder."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder}/mlflow.db", str(folder / "artifacts")


def test_sample_grids_and_the_learning_curve_reach_tensorboard_and_mlflow(tmp_path, store):
    uri, artifacts = store
    loggers = [
        TensorBoardLogger(tmp_path, name="tensorboard", version=""),
        MLFlowLogger("unit", run_name="grid", tracking_uri=uri, artifact_location=artifacts),
    ]
    model = tiny_model(height=6, width=5)
    trainer = SimpleNamespace(loggers=loggers, global_step=5, is_global_zero=True)
    SampleGrid(str(tmp_path / "samples"), num_samples=4, seed=3).on_train_end(trainer, model)
    point = {"time_s": 1.5, "images": 32, "steps": 2, "bpd": 0.25, "bpd_se": 0.01, "kid": None, "kid_std": None}
    log_point(loggers, point, step=1)
    for logger in loggers:
        logger.finalize("success")
    with torch.no_grad():
        grid = make_grid(model.sample(4, generator=torch.Generator().manual_seed(3)), 2)  # (H, W, 1) levels 0/255

    written = events(tmp_path / "tensorboard")
    assert np.array_equal(tensorboard_image(written, "samples")[..., 0], grid[..., 0])
    assert written.Images("samples")[0].step == 5
    assert {
        (tag, e.step, e.value) for tag in ("curve/bpd", "curve/time_s", "curve/images") for e in written.Scalars(tag)
    } == {("curve/bpd", 1, 0.25), ("curve/time_s", 1, 1.5), ("curve/images", 1, 32.0)}

    client = MlflowClient(uri)
    run_id = loggers[1].run_id
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "curve/bpd")] == [(1, 0.25)]
    assert client.get_run(run_id).data.metrics["curve/images"] == 32
    picture = mlflow_image(client, run_id, "samples/final_step_5.png", tmp_path / "down")
    assert np.array_equal(picture.reshape(grid.shape[:2] + (-1,))[..., 0], grid[..., 0])


def test_a_multiruns_comparison_reaches_tensorboard_and_mlflow(tmp_path, store):
    uri, artifacts = store
    sweep = tmp_path / "multirun_7"
    for job, (model, seed) in enumerate((("pixelcnn", 0), ("pixelcnn", 1), ("row_lstm", 0))):
        make_run(
            sweep,
            str(job),
            grid_level=job % 2,
            model=model,
            seed=seed,
            test_bpd=0.2 + 0.01 * job,
            curve=curve((10, 100, 0.4), (20, 200, 0.2 + 0.01 * job)),
        )
    config = OmegaConf.create(
        {
            "hydra": {"sweep": {"dir": str(sweep)}},
            "compare": {},
            "logger": {
                "tensorboard": {"_target_": "pytorch_lightning.loggers.TensorBoardLogger"},
                "mlflow": {
                    "_target_": "pytorch_lightning.loggers.MLFlowLogger",
                    "experiment_name": "sweeps",
                    "tracking_uri": uri,
                    "artifact_location": artifacts,
                },
            },
        }
    )
    MultirunComparison(wandb=False).on_multirun_end(config)

    written = events(sweep / "tensorboard")
    for name in ("comparison", "samples_side_by_side"):
        assert np.array_equal(
            tensorboard_image(written, f"comparison/{name}"),
            np.asarray(Image.open(sweep / f"{name}.png").convert("RGB")),
        )
    (text,) = written.Tensors("comparison/text_summary")
    assert text.tensor_proto.string_val[0].decode() == (sweep / "comparison.md").read_text()

    client = MlflowClient(uri)
    (compared,) = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
    assert compared.info.run_name == "compare-multirun_7" and compared.info.status == "FINISHED"
    markdown = Path(client.download_artifacts(compared.info.run_id, "comparison.md", str(tmp_path)))
    assert markdown.read_text() == (sweep / "comparison.md").read_text()
    picture = mlflow_image(client, compared.info.run_id, "comparison/comparison/comparison.png", tmp_path)
    assert np.array_equal(picture[..., :3], np.asarray(Image.open(sweep / "comparison.png").convert("RGB")))


@pytest.mark.parametrize(("logger", "package"), [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_a_logger_whose_package_is_missing_is_one_paragraph_naming_the_install(logger, package, tmp_path, monkeypatch):
    cfg = compose_train([f"logger={logger}"], tmp_path)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None)
    with pytest.raises(
        UserError,
        match=rf"logger={logger} needs the {package} package, which is not installed\. "
        rf"Install it with pip install 'pixel-lightning\[{package}\]'",
    ):
        instantiate_loggers(cfg.logger)


def test_the_logger_configs_write_under_the_run_and_log_folders(tmp_path):
    cfg = compose_train(["logger=[tensorboard,mlflow]", f"paths.log_dir={tmp_path}/logs"], tmp_path / "run")
    assert cfg.logger.mlflow.tracking_uri == f"sqlite:///{tmp_path}/logs/mlflow.db"
    assert cfg.logger.mlflow.artifact_location == f"{tmp_path}/logs/mlartifacts"
    (tensorboard,) = instantiate_loggers(OmegaConf.masked_copy(cfg.logger, ["tensorboard"]))
    assert Path(tensorboard.log_dir) == tmp_path / "run" / "tensorboard"


@pytest.mark.slow
def test_a_multirun_logs_its_jobs_and_its_comparison_to_tensorboard_and_mlflow(tmp_path):
    """`train.py -m seed=0,1 debug=smoke logger=[tensorboard,mlflow]`: each job's metrics, curve and
    grids, and the comparison, read back from both."""
    if real_data_dir() is None:
        pytest.skip("PIXEL_DATA_DIR is not set: point it at a folder with the datasets (e.g. ../shared/data)")
    sweep, logs = tmp_path / "sweep", tmp_path / "logs"
    result = run(
        "train.py",
        "-m",
        "seed=0,1",
        "debug=smoke",
        "logger=[tensorboard,mlflow]",
        "model.net.layers=2",
        "curve.every_images=32",
        f"paths.log_dir={logs}",
        f"hydra.sweep.dir={sweep}",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert_ok(result)
    client = MlflowClient(f"sqlite:///{logs}/mlflow.db")
    runs = {
        r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("pixel-lightning").experiment_id])
    }
    assert set(runs) == {"train-pixelcnn-binarized_mnist", "compare-sweep"}
    jobs = client.search_runs(
        [runs["compare-sweep"].info.experiment_id], "attributes.run_name = 'train-pixelcnn-binarized_mnist'"
    )
    assert len(jobs) == 2
    for job in ("0", "1"):
        record = json.loads((sweep / job / "record.json").read_text())
        written = events(sweep / job / "tensorboard")
        assert [e.step for e in written.Images("samples")] == [record["steps"]]
        assert [round(e.value, 4) for e in written.Scalars("test/bpd")] == [round(record["test_bpd"], 4)]
        assert [e.value for e in written.Scalars("curve/images")] == [p["images"] for p in record["curve"]]
    for job_run in jobs:
        assert job_run.data.metrics["test/bpd"] > 0 and "curve/bpd" in job_run.data.metrics
        assert [a.path for a in client.list_artifacts(job_run.info.run_id, "samples")] == ["samples/epoch_000.png"]
    assert {a.path for a in client.list_artifacts(runs["compare-sweep"].info.run_id)} == {"comparison", "comparison.md"}
    assert {"comparison/comparison", "comparison/samples_side_by_side"} <= set(
        events(sweep / "tensorboard").Tags()["images"]
    )
