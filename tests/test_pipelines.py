"""The pipelines refuse unusable inputs before doing any work: a resume checkpoint of another
model or with weights that do not fit its own settings, a crafted checkpoint handed to sample.py.
In-process, on composed configs (fast)."""

import hydra
import pytest
import pytorch_lightning as pl
import torch
from support import tiny_binarized_mnist
from test_configs import compose_train

from pixel_lightning.errors import CheckpointError, DataError
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
    assert ("model.net._target_ is pixel_lightning.models.pixelcnn.PixelCNN in the checkpoint but "
            "pixel_lightning.models.row_lstm.RowLSTM here") in str(error.value)
    assert "leave out ckpt_path" in str(error.value)
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
        with pytest.raises(CheckpointError, match=r"asks to build pathlib\.Path\.touch \(at hyper_parameters\.data\."
                           r"eval_batch_size\._target_\).*trust_checkpoint=true"):
            sample(cfg)
        assert not marker.exists()


def test_resuming_weights_that_do_not_fit_their_own_settings_names_the_tensor_and_both_shapes(tmp_path, monkeypatch):
    data = tiny_binarized_mnist(tmp_path / "data", monkeypatch)  # without the check Lightning fails on the weights
    path, checkpoint = checkpoint_of([], tmp_path)
    checkpoint |= {"optimizer_states": [], "lr_schedulers": [], "loops": {}, "epoch": 0, "global_step": 0,
                   "pytorch-lightning_version": pl.__version__}
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
    overrides = [f"ckpt_path={path}", "mode=complete", "device=cpu", "completion.num_images=1",
                 "completion.samples_per_image=1", "completion.observed_rows=27"]
    with pytest.raises(CheckpointError, match=r"does not say which dataset it was trained on: its data settings name "
                       r"no data module \(no _target_\) and it holds no run record of them"):
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
