"""Checkpoints: atomic writes, weights-only loading, and clear errors for bad files."""

import errno
import os
import re

import pytest
import torch
from support import tiny_model

from pixel_lightning.callbacks.restored_paths import RestoredPathGuard, confine_path, confine_state
from pixel_lightning.checkpoint import check_fits, load_model, model_from_checkpoint, read_checkpoint
from pixel_lightning.errors import CheckpointError, OutputError
from pixel_lightning.models import AutoregressiveDistribution
from pixel_lightning.plugins import AtomicCheckpointIO


def model_checkpoint(model):
    return {"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}


def test_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = tiny_model(3, 4, height=3, width=3)
    path = tmp_path / "model.ckpt"
    AtomicCheckpointIO().save_checkpoint(model_checkpoint(model), path)
    loaded = load_model(path)
    x = torch.randint(0, 4, (2, 3, 3, 3))
    torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x))


def test_sampling_rebuilds_the_distribution_alone_with_the_same_weights_and_draws(tmp_path):
    """sample.py rebuilds only the AutoregressiveDistribution (no Lightning): it must be the trained
    model's distribution exactly, for the likelihood and for every draw."""
    torch.manual_seed(0)
    model = tiny_model(3, 4, height=3, width=3)
    sampler = model_from_checkpoint(model_checkpoint(model), "model.ckpt", sampling=True)
    assert type(sampler) is AutoregressiveDistribution
    x = torch.randint(0, 4, (2, 3, 3, 3))
    torch.testing.assert_close(sampler.log_prob(x), model.log_prob(x), rtol=0, atol=0)
    draws = [m.sample(5, generator=torch.Generator().manual_seed(1)) for m in (sampler, model)]
    assert torch.equal(*draws)


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OutputError, match=r"^Could not write the checkpoint .*last\.ckpt: No space left on device\."):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert read_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_a_checkpoint_is_fsynced_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    """Without the fsync a crash after the rename could leave a renamed but empty file (the data not
    yet on disk). The file synced is the one renamed: the same inode ends up at the path."""
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.fstat(fd).st_ino)) or fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", os.stat(a).st_ino)) or replace(a, b))
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
    assert events == [("fsync", path.stat().st_ino), ("replace", path.stat().st_ino)]
    assert read_checkpoint(path) == {"step": 1}


def test_a_checkpoint_over_the_file_size_limit_is_reported_as_a_write_failure_not_a_zip_writer_error(tmp_path):
    """Under a file-size limit (or on a full disk) torch's zip writer turns the failed write into
    `RuntimeError: [enforce fail at inline_container.cc] unexpected pos`: it must still say which
    file could not be written and why."""
    import resource

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)
    checkpoint = model_checkpoint(tiny_model(hidden=64))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))  # writes past 20 kB fail with EFBIG
    try:
        with pytest.raises(OutputError) as error:
            io.save_checkpoint(checkpoint, path)
        with pytest.raises(RuntimeError, match="inline_container"):  # what the user saw before
            torch.save(checkpoint, tmp_path / "unguarded.ckpt")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(error.value).startswith(f"Could not write the checkpoint {path}: File too large. Free space")
    assert "inline_container" not in str(error.value)
    assert read_checkpoint(path) == {"step": 1}  # the previous checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "unguarded.ckpt"]  # no temporary file left


def test_missing_checkpoint_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match=r"No checkpoint file at .*nope\.ckpt.*ckpt_path="):
        read_checkpoint(tmp_path / "nope.ckpt")


def test_truncated_checkpoint_is_reported_as_corrupt(tmp_path):
    path = tmp_path / "model.ckpt"
    AtomicCheckpointIO().save_checkpoint(model_checkpoint(tiny_model()), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(path)
    path.write_bytes(b"not a checkpoint")  # fails inside the weights-only unpickler
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(path)


class Payload:
    """An arbitrary python object: what a malicious pickle would carry."""


def test_checkpoint_with_python_objects_is_refused_unless_trusted(tmp_path):
    path = tmp_path / "unsafe.ckpt"
    torch.save({"payload": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"test_checkpoint.Payload.*trust_checkpoint=true"):
        read_checkpoint(path)
    assert isinstance(read_checkpoint(path, trust=True)["payload"], Payload)


def test_foreign_and_incompatible_checkpoints_are_explained(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a pixel-lightning model checkpoint"):
        load_model(foreign)

    checkpoint = model_checkpoint(tiny_model())
    shape = tuple(checkpoint["state_dict"].pop("net.input_conv.weight").shape)
    incompatible = tmp_path / "incompatible.ckpt"
    torch.save(checkpoint, incompatible)
    with pytest.raises(
        CheckpointError,
        match=rf"do not fit the model of its own hyper-parameters: it lacks "
        rf"net\.input_conv\.weight \(shape {re.escape(str(shape))}\)\. ",
    ):
        load_model(incompatible)


# ---------------------------------------------------------------- crafted hyper-parameters


def write_payload(marker):
    """A config that writes `marker` when instantiated: Path.write_text(Path(marker), "pwned")."""
    path = {"_target_": "pathlib.Path", "_args_": [str(marker)]}
    return {"_target_": "pathlib.Path.write_text", "_args_": [path, "pwned"]}


def crafted(route: str, marker) -> dict:
    """A weights-only-loadable checkpoint whose hyper-parameters carry the payload by `route`."""
    checkpoint = model_checkpoint(tiny_model())
    hparams, payload = checkpoint["hyper_parameters"], write_payload(marker)
    if route == "net":
        hparams["net"] = payload
    elif route == "data":
        hparams["data"] = {**hparams["data"], "_target_": payload["_target_"], "_args_": payload["_args_"]}
    elif route == "nested":
        hparams["net"] = {**hparams["net"], "extra": {"deeper": [payload]}}
    elif route == "_args_":
        hparams["net"] = {**hparams["net"], "_args_": [payload]}
    elif route == "_partial_":
        hparams["optimizer"] = {**payload, "_partial_": True}
    elif route == "interpolation":
        hparams["net"] = {**hparams["net"], "hidden": "${oc.env:HOME}"}
    return checkpoint


def test_the_payload_really_writes_when_built(tmp_path):
    """The control: what the routes below carry is not harmless."""
    import hydra

    hydra.utils.instantiate(write_payload(tmp_path / "marker"))
    assert (tmp_path / "marker").read_text() == "pwned"


#: The routes whose payload runs when the checkpoint is loaded trusted (their controls below). The others
#: are refused all the same, but a trusted load writes nothing through them (load_model builds no data
#: module, a `_partial_` config runs only when called, an interpolation carries no payload).
WRITING_ROUTES = ["net", "nested", "_args_"]


@pytest.mark.parametrize("route", ["net", "data", "nested", "_args_", "_partial_", "interpolation"])
def test_crafted_hyper_parameters_are_refused_before_anything_is_built(route, tmp_path):
    path, marker = tmp_path / "crafted.ckpt", tmp_path / "marker"
    torch.save(crafted(route, marker), path)
    assert read_checkpoint(path)["hyper_parameters"]  # the weights-only load alone lets it through
    refusal = r"crafted\.ckpt.* hyper_parameters\..*trust_checkpoint=true"
    with pytest.raises(CheckpointError, match=refusal) as error:
        load_model(path)
    if route in WRITING_ROUTES:  # elsewhere the marker's absence would prove nothing
        assert not marker.exists()
    assert "Traceback" not in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("route", WRITING_ROUTES)
def test_trusting_a_checkpoint_is_the_only_opt_out(route, tmp_path):
    """The control of each route whose refusal checks the marker: trusted, the payload runs."""
    path, marker = tmp_path / "crafted.ckpt", tmp_path / "marker"
    torch.save(crafted(route, marker), path)
    with pytest.raises(CheckpointError, match="not fit"):  # built (the file was trusted), then unusable
        load_model(path, trust=True)
    assert marker.read_text() == "pwned"


def test_plain_pickle_is_reported_as_unsafe_not_corrupt(tmp_path):
    import pickle

    path = tmp_path / "plain.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": {}, "payload": Payload}))
    with pytest.raises(CheckpointError, match=r"plain Python pickle.*trust_checkpoint=true"):
        read_checkpoint(path)
    torch.save({"payload": Payload()}, path, _use_new_zipfile_serialization=False)  # torch's old format
    with pytest.raises(CheckpointError, match=r"refuses to build \(.*Payload\).*trust_checkpoint=true"):
        read_checkpoint(path)


# ---------------------------------------------------------------- does a checkpoint fit a config


def test_a_checkpoint_of_another_model_or_dataset_is_refused_naming_both_sides(tmp_path):
    hparams = dict(tiny_model().hparams)
    check_fits(hparams, {k: hparams[k] for k in ("net", "data", "optimizer")}, "a.ckpt", fix="Fix.")  # itself fits
    bigger = {**hparams["net"], "hidden": 32}
    with pytest.raises(CheckpointError, match=r"'a\.ckpt'.*model\.net\.hidden is 12 in the checkpoint but 32 here\."):
        check_fits(hparams, {"net": bigger}, "a.ckpt", fix="Fix.")
    rgb = {**hparams["data"], "channels": 3, "levels": 256, "batch_size": 7}  # batch_size may differ
    with pytest.raises(CheckpointError) as error:
        check_fits(hparams, {"data": rgb}, "a.ckpt", fix="Fix.")
    assert "data.channels is 1 in the checkpoint but 3 here; data.levels is 2 in the checkpoint but 256 here" in str(
        error.value
    ) and "batch_size" not in str(error.value)
    with pytest.raises(CheckpointError, match="model.net.kernel is not set in the checkpoint but 3 here"):
        check_fits(hparams, {"net": {**hparams["net"], "kernel": 3}}, "a.ckpt", fix="Fix.")
    with pytest.raises(CheckpointError, match=r"optimizer\._target_ is torch\.optim\.Adam in the checkpoint but "):
        check_fits(hparams, {"optimizer": {"_target_": "torch.optim.SGD", "lr": 5}}, "a.ckpt", fix="Fix.")
    check_fits(hparams, {"optimizer": {"_target_": "torch.optim.Adam", "lr": 5}}, "a.ckpt", fix="Fix.")  # lr may change


def test_a_scheduler_on_one_side_only_is_named_as_it_is():
    step_lr = {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 1}
    hparams = dict(tiny_model().hparams) | {"scheduler": step_lr}
    with pytest.raises(CheckpointError) as error:
        check_fits(hparams, {"scheduler": None}, "a.ckpt", fix="Fix.")
    assert "model.scheduler is a torch.optim.lr_scheduler.StepLR in the checkpoint but null here. Fix." in str(
        error.value
    ) and "not set" not in str(error.value)
    with pytest.raises(
        CheckpointError,
        match=r"model\.scheduler is null in the checkpoint but a torch\.optim\."
        r"lr_scheduler\.StepLR here\. Fix\.$",
    ):
        check_fits({**hparams, "scheduler": None}, {"scheduler": hparams["scheduler"]}, "a.ckpt", fix="Fix.")


def test_an_unwritable_checkpoint_folder_stops_training_with_one_paragraph(tmp_path):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        plugins=[AtomicCheckpointIO()],
        callbacks=[ModelCheckpoint(dirpath=blocker / "checkpoints", save_last=True)],
    )
    images = torch.utils.data.DataLoader(torch.randint(0, 2, (4, 1, 4, 4)), batch_size=4)
    with pytest.raises(OutputError, match=r"^Could not write the checkpoint .*a-file/checkpoints/\S+\.ckpt: Not a dir"):
        trainer.fit(tiny_model(), images)


# ---------------------------------------------------------------- paths restored from a resume checkpoint


def fit_and_checkpoint(dirpath, ckpt_path=None, epochs: int = 1, guard: bool = True) -> None:
    """Fit a tiny model with the checkpoint callbacks of conf/callbacks/default.yaml (best by a
    monitored metric, top 1, plus last.ckpt; and last.ckpt every step), one batch per epoch."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    callbacks = [
        ModelCheckpoint(
            dirpath=dirpath,
            filename="epoch_{epoch:03d}",
            monitor="train/nll",
            save_top_k=1,
            save_last=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
        ModelCheckpoint(dirpath=dirpath, filename="last", every_n_train_steps=1, enable_version_counter=False),
    ] + ([RestoredPathGuard()] if guard else [])
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=dirpath,
    )
    images = torch.utils.data.DataLoader(torch.randint(0, 2, (4, 1, 4, 4)), batch_size=4)
    trainer.fit(tiny_model(), images, ckpt_path=ckpt_path)


def craft_resume_checkpoint(path, outside) -> dict:
    """Rewrite the checkpoint-callback states of the resume checkpoint `path` (of a run beside the
    folder `outside`) to name files in `outside` by each route Lightning deletes through: `..` (the
    k-th best, replaced by any better score; last.ckpt, here a folder: removed recursively) and a
    `local://` URL (the previous file of a monitor-less checkpoint callback). Returns the victims."""
    victims = {"kth": outside / "kth.ckpt", "last": outside / "folder", "url": outside / "url.ckpt"}
    for victim in victims.values():
        file = victim / "kept.txt" if victim.name == "folder" else victim
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text("precious")
    checkpoint = torch.load(path, weights_only=True)
    for state in checkpoint["callbacks"].values():
        if "dirpath" not in state:  # not a checkpoint callback's (the run record's totals)
            continue
        escape = f"{state['dirpath']}/../../{outside.name}"  # lexically inside the checkpoint folder
        if state["monitor"]:
            kth, worst = f"{escape}/{victims['kth'].name}", torch.tensor(float("inf"))
            state.update(
                best_k_models={kth: worst},
                kth_best_model_path=kth,
                kth_value=worst,
                best_model_path=kth,
                last_model_path=f"{escape}/{victims['last'].name}",
            )
        else:
            state["best_model_path"] = f"local://{victims['url']}"
    torch.save(checkpoint, path)
    return victims


@pytest.mark.parametrize("guard", [True, False])
def test_a_crafted_resume_checkpoint_deletes_nothing_outside_the_run(guard, tmp_path, caplog):
    """Without the guard (the control) Lightning deletes every victim; with it, none, and the run
    goes on with its own checkpoints."""
    run, outside = tmp_path / "run", tmp_path / "outside"
    fit_and_checkpoint(run / "checkpoints")
    path = run / "checkpoints" / "last.ckpt"
    victims = craft_resume_checkpoint(path, outside)
    fit_and_checkpoint(run / "checkpoints", ckpt_path=path, epochs=2, guard=guard)
    survivors = {name for name, victim in victims.items() if victim.exists()}
    if not guard:
        assert survivors == set(), "the control: the crafted paths must really be deleted"
        return
    assert survivors == set(victims)
    assert (outside / "folder" / "kept.txt").read_text() == "precious"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_000.ckpt", "epoch_001.ckpt", "last.ckpt"]
    (warning,) = [r.getMessage() for r in caplog.records if "outside this run's checkpoint folder" in r.getMessage()]
    assert all(victim.name in warning for victim in victims.values())


def test_honest_checkpoint_states_are_kept_and_moved_ones_rebased(tmp_path):
    old, new = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    fit_and_checkpoint(old)
    states = torch.load(old / "last.ckpt", weights_only=True)["callbacks"]
    for state in states.values():  # restoring into the same folder: nothing changes
        copy = {**state, "best_k_models": dict(state["best_k_models"])}
        assert confine_state(copy, str(old), state["monitor"] and "min") == [] and copy == state
    (tmp_path / "old").rename(tmp_path / "new")  # the run folder moved: its paths name the old place
    monitored = next(state for state in states.values() if state["monitor"])
    moved = confine_state(dict(monitored), str(new), "min")
    assert moved == []
    assert confine_path(monitored["best_model_path"], str(old), str(new)) == str(new / "epoch_000.ckpt")
    assert confine_path(str(new / ".." / "checkpoints" / "epoch_000.ckpt"), None, str(new)) == str(
        new / "epoch_000.ckpt"
    )  # `..` that stays inside is fine
    (new / "link.ckpt").symlink_to(tmp_path / "elsewhere.ckpt")
    (tmp_path / "elsewhere.ckpt").write_text("")
    assert confine_path(str(new / "link.ckpt"), None, str(new)) is None  # a symlink out is not
    assert confine_path(str(new / "gone.ckpt"), None, str(new)) is None  # nor a file that is not there
    assert confine_path(f"file://{new}/epoch_000.ckpt", None, str(new)) is None  # nor any URL


def test_a_restored_checkpoint_state_that_is_not_one_is_dropped(tmp_path, caplog):
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import ModelCheckpoint

    callback = ModelCheckpoint(dirpath=tmp_path)
    checkpoint = {"callbacks": {callback.state_key: [f"{tmp_path}/../victim"], "Other": {"kept": 1}}}
    RestoredPathGuard().on_load_checkpoint(SimpleNamespace(callbacks=[callback]), None, checkpoint)
    assert checkpoint["callbacks"] == {"Other": {"kept": 1}} and "the whole state ModelCheckpoint" in caplog.text
