"""The pipelines refuse unusable inputs before doing any work: a resume checkpoint of another
model or with weights that do not fit its own settings, a crafted checkpoint handed to sample.py.
In-process, on composed configs (fast)."""

import re

import hydra
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from support import requires_data, tiny_binarized_mnist, tiny_model
from test_configs import compose_train

from pixel_lightning.checkpoint import model_from_checkpoint
from pixel_lightning.errors import CheckpointError, DataError, UserError
from pixel_lightning.eval import evaluate
from pixel_lightning.sample import sample
from pixel_lightning.train import check_resume, train


def checkpoint_of(overrides: list[str], tmp_path, name: str = "model.ckpt"):
    """A checkpoint (hyper-parameters and weights) of the model the overrides compose."""
    model = hydra.utils.instantiate(compose_train(overrides, tmp_path).model)
    checkpoint = {"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}
    torch.save(checkpoint, tmp_path / name)
    return tmp_path / name, checkpoint


def test_resuming_with_another_architecture_is_refused_before_training(tmp_path):
    path, _ = checkpoint_of([], tmp_path)  # the default PixelCNN
    check_resume(compose_train([f"ckpt_path={path}"], tmp_path))  # the same config fits
    run_dir = tmp_path / "run"
    cfg = compose_train(["model=row_lstm", "~logger", f"ckpt_path={path}"], run_dir)
    with pytest.raises(CheckpointError) as error:
        train(cfg)
    assert (
        "model.net._target_ is pixel_lightning.models.pixelcnn.PixelCNN in the checkpoint but "
        "pixel_lightning.models.row_lstm.RowLSTM here"
    ) in str(error.value)
    assert "leave out ckpt_path" in str(error.value)
    assert not run_dir.exists(), "nothing may be written before the refusal"


def test_eval_refuses_data_overrides_that_do_not_fit_the_checkpoint_before_building_anything(tmp_path):
    path, _ = checkpoint_of([], tmp_path)  # a PixelCNN of binarized MNIST (1 channel, 2 levels, 28 x 28)
    run_dir = tmp_path / "run"
    cfg = compose_train([f"ckpt_path={path}", "+data=cifar10", "~logger"], run_dir, config_name="eval")
    with pytest.raises(CheckpointError) as error:
        evaluate(cfg)
    assert (
        "data._target_ is pixel_lightning.data.BinarizedMNISTDataModule in the checkpoint but "
        "pixel_lightning.data.CIFAR10DataModule here"
    ) in str(error.value)
    assert "data.channels is 1 in the checkpoint but 3 here" in str(error.value)
    assert "leave out the data overrides" in str(error.value)
    assert not run_dir.exists(), "nothing may be written before the refusal"


@pytest.mark.parametrize("trusted", [False, True])
def test_sample_refuses_a_crafted_checkpoint_unless_trusted(trusted, tmp_path, monkeypatch):
    """mode=complete builds the checkpoint's datamodule; a payload in its settings must never run."""
    marker = tmp_path / "marker"
    path, checkpoint = checkpoint_of([], tmp_path)
    checkpoint["hyper_parameters"]["data"] |= {
        "eval_batch_size": {"_target_": "pathlib.Path.touch", "_args_": [str(marker)]},
        "download": False,  # the trusted run then stops at the (empty) data folder, offline
    }
    torch.save(checkpoint, path)
    monkeypatch.setenv("PIXEL_DATA_DIR", str(tmp_path / "no-data"))
    overrides = [f"ckpt_path={path}", "mode=complete", "device=cpu", f"trust_checkpoint={str(trusted).lower()}"]
    cfg = compose_train(overrides, tmp_path / "out", config_name="sample")
    if trusted:  # the opt-out really opts out: the payload runs
        with pytest.raises(DataError, match="Binarized MNIST data not found"):
            sample(cfg)
        assert marker.exists()
    else:
        with pytest.raises(
            CheckpointError,
            match=r"asks to build pathlib\.Path\.touch \(at hyper_parameters\.data\."
            r"eval_batch_size\._target_\).*trust_checkpoint=true",
        ):
            sample(cfg)
        assert not marker.exists()


def test_resuming_weights_that_do_not_fit_their_own_settings_names_the_tensor_and_both_shapes(tmp_path, monkeypatch):
    data = tiny_binarized_mnist(tmp_path / "data", monkeypatch)  # without the check Lightning fails on the weights
    path, checkpoint = checkpoint_of([], tmp_path)
    checkpoint |= {
        "optimizer_states": [],
        "lr_schedulers": [],
        "loops": {},
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": pl.__version__,
    }
    checkpoint["state_dict"]["net.input_conv.weight"] = torch.zeros(3, 2, 1)  # edited: no longer the net's
    torch.save(checkpoint, path)
    run_dir = tmp_path / "run"
    with pytest.raises(CheckpointError) as error:
        train(compose_train(["~logger", f"ckpt_path={path}", f"paths.data_dir={data}", "data.download=false"], run_dir))
    shape = tuple(hydra.utils.instantiate(compose_train([], tmp_path).model).net.input_conv.weight.shape)
    assert f"net.input_conv.weight is shape (3, 2, 1) in the file but shape {shape} in the model." in str(error.value)
    assert "this version of pixel-lightning" not in str(error.value) and "\n" not in str(error.value)
    assert not run_dir.exists(), "nothing may be written before the refusal"


def test_completion_says_when_a_checkpoint_does_not_name_its_dataset(tmp_path, monkeypatch):
    path, checkpoint = checkpoint_of([], tmp_path)
    del checkpoint["hyper_parameters"]["data"]["_target_"]
    torch.save(checkpoint, path)
    data = tiny_binarized_mnist(tmp_path / "data", monkeypatch)
    monkeypatch.setenv("PIXEL_DATA_DIR", str(data))
    overrides = [
        f"ckpt_path={path}",
        "mode=complete",
        "device=cpu",
        "completion.num_images=1",
        "completion.samples_per_image=1",
        "completion.observed_rows=27",
    ]
    with pytest.raises(
        CheckpointError,
        match=r"does not say which dataset it was trained on: its data settings name "
        r"no data module \(no _target_\) and it holds no run record of them",
    ):
        sample(compose_train(overrides, tmp_path / "out", config_name="sample"))
    marker = tmp_path / "marker"  # the run record's copy is data from the file like the rest
    checkpoint["run_record"] = {"data": {"_target_": "pathlib.Path.touch", "_args_": [str(marker)]}}
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"asks to build pathlib\.Path\.touch \(at run_record\.data\._target_\)"):
        sample(compose_train(overrides, tmp_path / "out", config_name="sample"))
    assert not marker.exists()
    # where the settings lack it (older DCGAN checkpoints), the run record's copy names the data module
    saved_data = {"_target_": "pixel_lightning.data.BinarizedMNISTDataModule", "download": False}
    checkpoint["run_record"] = {"data": saved_data}
    torch.save(checkpoint, path)
    assert sample(compose_train(overrides, tmp_path / "out", config_name="sample")).name == "completes.png"


def tiny_checkpoint(tmp_path):
    """A 4 x 4 binary PixelCNN's checkpoint (enough for sample mode) and the path it is saved at."""
    model = tiny_model()
    checkpoint = {"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}
    torch.save(checkpoint, tmp_path / "tiny.ckpt")
    return tmp_path / "tiny.ckpt", checkpoint


def test_sample_draws_in_batches_of_batch_size_from_one_generator(tmp_path):
    path, checkpoint = tiny_checkpoint(tmp_path)
    overrides = [f"ckpt_path={path}", "num_samples=10", "batch_size=4", "save_npy=true", "device=cpu", "seed=5"]
    sample(compose_train(overrides, tmp_path / "out", config_name="sample"))
    written = np.load(tmp_path / "out" / "samples.npy")
    model = model_from_checkpoint(checkpoint, path, sampling=True)
    generator = torch.Generator().manual_seed(5)
    batched = torch.cat([model.sample(n, generator=generator) for n in (4, 4, 2)])
    assert written.shape == (10, 1, 4, 4) and np.array_equal(written, batched.numpy())
    at_once = model.sample(10, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(at_once, batched)  # so the comparison above tells the two apart


@pytest.mark.parametrize(
    "overrides, asked, count",
    [
        (["num_samples=1000000000000"], "num_samples=1000000000000", 10**12),
        (
            ["mode=complete", "completion.samples_per_image=1000000000000"],
            "completion.num_images=8 with samples_per_image=1000000000000",
            8 * (10**12 + 2),
        ),  # + occluded and original
    ],
)
def test_sample_refuses_an_output_larger_than_the_memory_before_drawing(overrides, asked, count, tmp_path, monkeypatch):
    from pixel_lightning import sample as pipeline

    path, _ = tiny_checkpoint(tmp_path)
    monkeypatch.setenv("PIXEL_DATA_DIR", str(tmp_path / "no-data"))  # the refusal comes before any data is read
    cfg = compose_train([f"ckpt_path={path}", "device=cpu", *overrides], tmp_path / "out", config_name="sample")
    with pytest.raises(UserError) as error:
        sample(cfg)
    needed = count * 16 * 8 * pipeline.MEMORY_PER_LEVEL_BYTE / 1e9  # 16 int64 levels per image, and their copies
    assert str(error.value).startswith(
        f"{asked} asks for {count:,} images of shape (1, 4, 4), which need about {needed:,.1f} GB of memory"
    )
    assert not (tmp_path / "out").exists()


@requires_data
def test_a_failing_sample_quality_step_loses_neither_the_test_line_nor_the_recorded_likelihood(
    tmp_path, monkeypatch, capsys
):
    import json

    from pixel_lightning.cli import run_job
    from pixel_lightning.evaluation.fid import SampleQuality

    path, _ = checkpoint_of(["model.net.hidden=8", "model.net.layers=1"], tmp_path)

    def fail(self, model, datamodule):
        raise RuntimeError("the sample-quality step failed")

    monkeypatch.setattr(SampleQuality, "evaluate", fail)
    run_dir = tmp_path / "run"
    cfg = compose_train(
        [
            f"ckpt_path={path}",
            "~logger",
            "trainer.accelerator=cpu",
            "trainer.limit_test_batches=1",
            "data.eval_batch_size=8",
        ],
        run_dir,
        config_name="eval",
    )
    with pytest.raises(RuntimeError, match="the sample-quality step failed"):
        run_job(evaluate, cfg)
    line = re.search(
        r"^Test NLL: (\d+\.\d\d) nats/image, \d\.\d{4} bits/dim \(checkpoint (\S+)\)$", capsys.readouterr().out, re.M
    )
    assert line and line.group(2) == str(path)
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "failed" and "the sample-quality step failed" in record["error"]
    assert f"{record['test_nll']:.2f}" == line.group(1)
