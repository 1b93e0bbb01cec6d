"""Trained models as data: export to the Hub layout, load back exactly, refuse what is not a model folder."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file
from support import requires_data, tiny_model

from pixel_lightning import pretrained
from pixel_lightning.errors import CheckpointError, UserError
from pixel_lightning.export import export, first_images_nll
from pixel_lightning.export import main as export_main
from pixel_lightning.pretrained import load_model, read_model_source

DATA = {
    "_target_": "pixel_lightning.data.BinarizedMNISTDataModule",
    "channels": 1,
    "height": 4,
    "width": 4,
    "levels": 2,
    "data_dir": "/home/someone/data",
    "batch_size": 8,
}


def checkpoint_of(model, path, **extra):
    """A checkpoint dict as train.py's ModelCheckpoint writes it (the parts a model is rebuilt from)."""
    hparams = dict(model.hparams, data=DATA)
    torch.save(
        {
            "hyper_parameters": hparams,
            "state_dict": model.state_dict(),
            "run_record": {"model": "pixelcnn", "dataset": "binarized_mnist"},
            **extra,
        },
        path,
    )
    return path


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    model = tiny_model(height=4, width=4)
    with torch.no_grad():  # weights away from their initial values, so a wrong load shows
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model, checkpoint_of(model, tmp_path / "epoch_009.ckpt")


def exported(trained, tmp_path):
    """The folder of the trained checkpoint's export."""
    export(trained[1], tmp_path / "folder")
    return tmp_path / "folder"


def images(count=8):
    return torch.randint(0, 2, (count, 1, 4, 4), generator=torch.Generator().manual_seed(1))


def test_export_then_load_gives_the_checkpoints_log_prob_exactly(trained, tmp_path):
    model, ckpt = trained
    card = export(ckpt, tmp_path / "folder")
    loaded, from_ckpt = load_model(tmp_path / "folder"), load_model(ckpt)
    x = images()
    assert torch.equal(loaded.log_prob(x), model.eval().log_prob(x))
    assert torch.equal(from_ckpt.log_prob(x), model.log_prob(x))
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["config.json", "model.safetensors"]
    assert "data_dir" not in card["hyper_parameters"]["data"], "the training machine's folders stay out of the card"
    assert card["names"] == {"model": "pixelcnn", "dataset": "binarized_mnist"}


def test_the_card_keeps_the_records_figures_but_not_a_resumes_checkpoint_path(trained, tmp_path):
    from pixel_lightning.records import blank_record, write_record

    _, ckpt = trained
    overrides = ["experiment=zoo_pixelcnn_binarized_mnist", "ckpt_path=/home/someone/run/checkpoints/last.ckpt"]
    write_record(tmp_path, blank_record() | {"test_nll": 88.5, "overrides": overrides})
    card = export(ckpt, tmp_path / "folder", record=tmp_path / "record.json", hardware="a 2-core x86 CPU")
    record = card["figures"]["record"]
    assert record["test_nll"] == 88.5 and record["overrides"] == overrides[:1] and record["resumed"] is True
    assert card["figures"]["hardware"] == "a 2-core x86 CPU" and "core_hours" not in card["figures"]
    assert "/home/someone" not in (tmp_path / "folder" / "config.json").read_text()
    # a run on more than one thread: its core-hours, which the README shows, are given by hand
    assert export_main([str(ckpt), str(tmp_path / "cores"), "--core-hours", "3.9"]) == 0
    assert json.loads((tmp_path / "cores" / "config.json").read_text())["figures"]["core_hours"] == 3.9
    assert export_main([str(ckpt), str(tmp_path / "none"), "--core-hours", "0"]) == 2


def test_sampling_module_from_a_folder_samples_like_the_checkpoints(trained, tmp_path):
    _, ckpt = trained
    export(ckpt, tmp_path / "folder")
    a = load_model(tmp_path / "folder", sampling=True).sample(3, generator=torch.Generator().manual_seed(5))
    b = load_model(ckpt, sampling=True).sample(3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_raw_weights_are_the_ones_before_averaging(trained, tmp_path):
    model, _ = trained
    raw = {name: tensor + 0.5 for name, tensor in model.state_dict().items()}
    ckpt = checkpoint_of(model, tmp_path / "ema.ckpt", current_model_state=raw)
    export(ckpt, tmp_path / "raw", raw_weights=True)
    export(ckpt, tmp_path / "ema")
    assert torch.equal(
        load_file(tmp_path / "raw" / "model.safetensors")["net.input_conv.weight"], raw["net.input_conv.weight"]
    )
    assert torch.equal(
        load_file(tmp_path / "ema" / "model.safetensors")["net.input_conv.weight"],
        model.state_dict()["net.input_conv.weight"],
    )
    with pytest.raises(CheckpointError, match="--raw-weights"):
        export(checkpoint_of(model, tmp_path / "plain.ckpt"), tmp_path / "x", raw_weights=True)


def test_a_folder_that_holds_a_pickle_is_refused(trained, tmp_path):
    folder = exported(trained, tmp_path)
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weights": 1}, f)
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: a pickle"):
        load_model(folder)


def test_a_config_that_names_an_unknown_target_is_refused(trained, tmp_path):
    folder = exported(trained, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["hyper_parameters"]["net"]["_target_"] = "os.system"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="asks to build os.system"):
        load_model(folder)
    with pytest.raises(CheckpointError, match="asks to build os.system"):
        load_model(folder, trust=True)  # trust lifts a .ckpt's checks, never a folder's


def test_weights_that_do_not_fit_the_config_are_refused(trained, tmp_path):
    folder = exported(trained, tmp_path)
    weights = load_file(folder / "model.safetensors")
    weights["net.input_conv.weight"] = torch.zeros(3, 3)
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"net\.input_conv\.weight is shape \(3, 3\)"):
        load_model(folder)


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_a_missing_file_is_named(trained, tmp_path, missing):
    folder = exported(trained, tmp_path)
    (folder / missing).unlink()
    with pytest.raises(CheckpointError, match=f"has no {missing}"):
        load_model(folder)


def test_a_garbled_config_or_weights_file_is_one_paragraph(trained, tmp_path):
    folder = exported(trained, tmp_path)
    (folder / "model.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps({"format": "something-else", "hyper_parameters": {}}))
    with pytest.raises(CheckpointError, match="not the config of a pixel-lightning model"):
        load_model(folder)


def test_a_config_link_that_leads_outside_the_folder_is_refused(trained, tmp_path):
    folder = exported(trained, tmp_path)
    (tmp_path / "elsewhere.json").write_text((folder / "config.json").read_text())
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(CheckpointError, match="leads outside its folder"):
        load_model(folder)


def test_a_hub_repo_id_downloads_only_the_config_and_weights(trained, tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    model, ckpt = trained
    export(ckpt, tmp_path / "snapshot")
    asked = {}

    def fake_download(repo_id, allow_patterns=None, **_):
        asked.update(repo_id=repo_id, allow_patterns=allow_patterns)
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.chdir(tmp_path)
    loaded = load_model("someone/pixelcnn-mnist")
    assert asked == {"repo_id": "someone/pixelcnn-mnist", "allow_patterns": ["config.json", "model.safetensors"]}
    assert torch.equal(loaded.log_prob(images()), model.eval().log_prob(images()))


def test_an_unreachable_hub_is_one_paragraph(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def offline(repo_id, **_):
        raise OSError("We couldn't connect to the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"Could not download the model 'someone/model'.*offline, pass the path"):
        read_model_source("someone/model")


def test_a_name_that_is_nothing_lists_the_zoo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="names no model: it is not a zoo model"):
        read_model_source("no such model")


def test_export_command_reports_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    assert export_main([str(tmp_path / "missing.ckpt"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: No checkpoint file at")


@requires_data
def test_first_images_nll_is_the_mean_over_exactly_those_images(tmp_path):
    import os

    torch.manual_seed(0)
    data = dict(DATA, height=28, width=28, data_dir=os.environ["PIXEL_DATA_DIR"])
    model = tiny_model(height=28, width=28).eval()
    from pixel_lightning.data.first_images import first_test_images

    first, _ = first_test_images(data, data["data_dir"], 7, "--first-images")
    expected = -model.log_prob(first).double().sum().item() / 7
    assert first_images_nll(model, data, data["data_dir"], 7, batch_size=3) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("name", pretrained.zoo_names())
@requires_data
def test_each_zoo_model_measures_its_cards_figure(name):
    """The card's NLL on the first 500 test images, recomputed from the shipped weights (to 1e-3 nats), and a
    grid of samples through the cached sampler."""
    import os

    checkpoint = read_model_source(name)
    card = checkpoint["card"]
    model = load_model(name, sampling=True)
    figure = card["figures"]["first_500_test_nll"]
    nll = first_images_nll(model, checkpoint["hyper_parameters"]["data"], os.environ["PIXEL_DATA_DIR"], 500)
    assert nll == pytest.approx(figure, abs=1e-3)
    assert (pretrained.ZOO_DIR / name / "model.safetensors").stat().st_size < 1 << 20
    samples = model.sample(4, method="cached", generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, *model.image_shape) and 0 <= samples.min() and samples.max() < model.levels
    assert math.isfinite(card["figures"]["record"]["test_nll"])


@pytest.mark.parametrize("name", pretrained.zoo_names())
def test_each_zoo_cards_command_composes_the_settings_it_was_trained_with(name):
    """The recipe on the card reproduces the model: its command composes the card's net, optimizer,
    schedule and batch, and as many epochs as the run trained."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from test_configs import CONF

    card = read_model_source(name)["card"]
    program, script, *overrides = card["figures"]["command"].split()
    assert (program, script) == ("python", "train.py")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    trained_with = card["hyper_parameters"]
    for key in ("net", "optimizer", "scheduler"):
        assert model[key] == trained_with[key], key
    assert (cfg.data.dataset, cfg.data.batch_size) == (
        trained_with["data"]["dataset"],
        trained_with["data"]["batch_size"],
    )
    assert cfg.trainer.max_epochs == round(card["figures"]["record"]["epochs"])


def test_sample_py_draws_from_a_model_folder_and_names_both_settings_without_one(trained, tmp_path):
    from test_cli import assert_ok, assert_user_error, run

    _, ckpt = trained
    export(ckpt, tmp_path / "folder")
    result = run(
        "sample.py",
        f"pretrained={tmp_path / 'folder'}",
        "num_samples=4",
        f"hydra.run.dir={tmp_path / 's'}",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert_ok(result)
    assert (tmp_path / "s" / "samples.png").is_file()
    both = run("sample.py", f"pretrained={tmp_path / 'folder'}", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'b'}")
    assert_user_error(both, "both name a model")
    neither = run("sample.py", "num_samples=4", f"hydra.run.dir={tmp_path / 'n'}", env={"OMP_NUM_THREADS": "1"})
    if pretrained.DEFAULT_MODEL in pretrained.zoo_names():  # a newcomer's `python sample.py`: the zoo's digits
        assert_ok(neither)
        assert (tmp_path / "n" / "samples.png").is_file()
    else:
        assert_user_error(neither, "No model given. Pass ckpt_path=", "pretrained=<name>")


@requires_data
def test_eval_py_on_an_exported_folder_prints_the_checkpoints_test_nll(tmp_path):
    from test_cli import assert_ok, run

    torch.manual_seed(0)
    model = tiny_model(height=28, width=28)
    hparams = dict(model.hparams, data=dict(DATA, height=28, width=28))
    ckpt = tmp_path / "model.ckpt"
    torch.save({"hyper_parameters": hparams, "state_dict": model.state_dict()}, ckpt)
    export(ckpt, tmp_path / "folder")
    lines = []
    for source in (f"ckpt_path={ckpt}", f"pretrained={tmp_path / 'folder'}"):
        result = run(
            "eval.py",
            source,
            "logger=csv",
            "fid.num_samples=0",
            "trainer.limit_test_batches=2",
            f"hydra.run.dir={tmp_path / str(len(lines))}",
            env={"OMP_NUM_THREADS": "1"},
        )
        assert_ok(result)
        lines.append(next(line for line in result.stdout.splitlines() if line.startswith("Test NLL:")).split("(")[0])
    assert lines[0] == lines[1]
