"""What a run checks before it trains or tests, so it never fails hours later (an impossible
fid.temperature, an unwritable fid.cache_dir, data no sample-quality classifier knows); the
measurements that leave training's random generators alone; the sample-quality caches written
durably."""

import os

import pytest
import pytorch_lightning as pl
import torch
from support import requires_data, tiny_binarized_mnist, tiny_model
from test_configs import compose_train
from test_fid import TINY, Uniform, mnist  # noqa: F401  (mnist: the module's fixture)
from torch.utils.data import DataLoader
from torchmetrics.image.kid import KernelInceptionDistance

from pixel_lightning.callbacks import LearningCurve, RunRecord
from pixel_lightning.errors import DataError, OutputError, UserError
from pixel_lightning.evaluation import fid
from pixel_lightning.evaluation.fid import SampleQuality, kernel_distance
from pixel_lightning.train import train


def no_fit(*args, **kwargs):
    raise AssertionError("trainer.fit ran: the setting was not checked before training")


@pytest.mark.parametrize("temperature", ["-1", "0", "abc"])
def test_an_impossible_fid_temperature_is_refused_before_training(temperature, tmp_path, monkeypatch):
    monkeypatch.setattr(pl.Trainer, "fit", no_fit)
    cfg = compose_train(["~logger", f"fid.temperature={temperature}"], tmp_path)
    with pytest.raises(UserError) as error:
        train(cfg)
    assert str(error.value) == (
        f"fid.temperature must be a number above 0, but it is {temperature}. Fix the "
        "override, e.g. fid.temperature=1.0."
    )


def test_an_unwritable_fid_cache_dir_is_refused_before_the_first_training_step(tmp_path, monkeypatch):
    data = tiny_binarized_mnist(tmp_path / "data", monkeypatch)
    (tmp_path / "a_file").write_text("")
    cache = tmp_path / "a_file" / "cache"  # a path through a file: unwritable whoever runs the test
    steps = []
    monkeypatch.setattr(pl.LightningModule, "optimizer_step", lambda *args, **kwargs: steps.append(1))
    cfg = compose_train(
        [
            "debug=smoke",
            f"paths.data_dir={data}",
            "data.download=false",
            "~logger",
            "trainer.num_sanity_val_steps=0",
            f"fid.cache_dir={cache}",
        ],
        tmp_path / "run",
    )
    with pytest.raises(UserError) as error:
        train(cfg)
    assert str(error.value).startswith(
        f"fid.cache_dir={cache} cannot be written (Not a directory): the "
        "sample-quality step at the end of the run caches"
    )
    assert "fid.num_samples=0" in str(error.value) and not steps


class Unlabelled(pl.LightningDataModule):
    """Binary 4x4 images of a dataset no sample-quality classifier knows (as ImageNet's)."""

    levels, batch_size = 2, 4

    def test_dataloader(self):
        return DataLoader(torch.randint(0, 2, (8, 1, 4, 4), generator=torch.Generator().manual_seed(0)), batch_size=4)


def test_testing_data_that_no_classifier_knows_with_sample_quality_on_fails_before_the_test(tmp_path, monkeypatch):
    """eval.py on an ImageNet checkpoint with the default fid settings: refused before the whole test."""
    model, batches = tiny_model(), []
    monkeypatch.setattr(type(model), "test_step", lambda self, batch, batch_idx: batches.append(batch_idx))
    record = RunRecord(str(tmp_path), quality=SampleQuality(num_samples=4, cache_dir=str(tmp_path / "cache")))
    trainer = pl.Trainer(
        callbacks=[record], logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu"
    )
    with pytest.raises(DataError) as error:
        trainer.test(model, datamodule=Unlabelled())
    assert "No labelled dataset is known for Unlabelled" in str(error.value)
    assert "fid.num_samples=0" in str(error.value) and not batches


def test_kernel_distance_is_torchmetrics_kid_with_its_own_generator():
    """The same value as KernelInceptionDistance under the global generator seeded alike."""
    features = torch.randn(60, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    real, fake = features[:30], features[30:] + 0.5
    metric = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=7, subset_size=20)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        expected = metric.compute()
    assert kernel_distance(real, fake, subsets=7, subset_size=20, seed=3) == (float(expected[0]), float(expected[1]))


@pytest.fixture
def seeding_calls(monkeypatch) -> list[str]:
    """The calls that seed or set a global generator (torch.manual_seed seeds every CUDA device's
    too; fork_rng(devices=[]) restores only the CPU's): none may happen in a measurement."""
    calls = []
    for module, name in (
        (torch, "manual_seed"),
        (torch, "seed"),
        (torch.random, "manual_seed"),
        (torch.cuda, "manual_seed"),
        (torch.cuda, "manual_seed_all"),
        (torch.cuda, "set_rng_state"),
        (torch.cuda, "set_rng_state_all"),
        (torch.cuda, "seed_all"),
    ):
        monkeypatch.setattr(
            module, name, lambda *args, _name=f"{module.__name__}.{name}", **kwargs: calls.append(_name)
        )
    return calls


@requires_data
def test_sample_quality_and_a_learning_curve_point_leave_the_global_generators_alone(
    mnist,  # noqa: F811  (the fixture imported from test_fid)
    tmp_path,
    seeding_calls,
):
    """The whole score (training its classifier, the real statistics, KID) and a curve point (its
    validation subset, the bits/dim; a model without a likelihood: KID) with a fresh cache."""
    quality = SampleQuality(num_samples=6, num_real=100, batch_size=6, cache_dir=str(tmp_path), classifier=TINY)
    curve = LearningCurve(images=50, batch_size=25, kid_samples=6, quality=quality)
    likelihood, gan = tiny_model(height=28, width=28), Uniform()  # made before: initial weights draw from it
    before = torch.get_rng_state()
    quality.evaluate(gan, mnist)

    class Trainer:  # what a curve point reads of the trainer
        is_global_zero, global_step, loggers, callbacks, datamodule = True, 3, [], [], mnist

    curve._start = curve.clock()
    curve.measure(Trainer, likelihood)
    curve.measure(Trainer, gan)
    assert torch.equal(torch.get_rng_state(), before)
    assert seeding_calls == []
    assert curve.points[0]["bpd"] > 0 and curve.points[1]["kid"] is not None


def test_the_sample_quality_caches_are_written_durably_and_a_failed_write_is_one_paragraph(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    fid._save(torch.arange(3), tmp_path / "stats.pt")
    assert synced and torch.equal(torch.load(tmp_path / "stats.pt", weights_only=True), torch.arange(3))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OutputError, match=r"^Could not write the sample-quality cache .*a_file/stats.pt: "):
        fid._save(torch.arange(3), tmp_path / "a_file" / "stats.pt")


@pytest.mark.parametrize("model", ["pixelcnn", "pixelcnn_pp"])
@pytest.mark.parametrize("components", ["2.5", "five"])
def test_a_mixture_of_a_fractional_or_worded_number_of_components_is_refused_naming_the_setting(
    model, components, tmp_path
):
    import hydra

    from pixel_lightning.cli import user_error_message

    cfg = compose_train(
        ["data=cifar10", f"model={model}", "model/output=logistic_mixture", f"model.output.components={components}"],
        tmp_path,
    )
    with pytest.raises(Exception) as error:
        hydra.utils.instantiate(cfg.model)
    shown = {"2.5": "2.5", "five": "'five'"}[components]
    assert user_error_message(error.value) == (
        "model.output.components must be an integer of at least 1 (the logistics of each pixel's mixture), but it "
        f"is {shown}. Fix the override, e.g. model.output.components=10."
    )


@pytest.mark.parametrize(
    "settings, asked",
    [
        ({}, "num_samples=1000000000000 for each of its 10 classes asks for 10,000,000,000,000 images"),
        ({"label": 3}, "num_samples=1000000000000 asks for 1,000,000,000,000 images"),
    ],
)
def test_sampling_a_conditional_checkpoint_refuses_too_many_images_before_building_their_labels(
    settings, asked, monkeypatch
):
    from test_conditioning import conditional_model, sample_settings

    from pixel_lightning.sample import sample_labels

    model = conditional_model("pixelcnn.PixelCNN")
    for name in ("full", "arange"):  # no label is built: 10**13 of them would take 80 TB
        monkeypatch.setattr(torch, name, lambda *args, _name=name, **kwargs: pytest.fail(f"torch.{_name} ran"))
    with pytest.raises(UserError) as error:
        sample_labels(sample_settings(num_samples=10**12, **settings), model)
    assert str(error.value).startswith(f"{asked} of shape (1, 4, 4), which need about ")


GOOD_CURVE = {
    "points": [{"time_s": 1.5, "images": 64, "steps": 4, "bpd": 0.5, "bpd_se": 0.01}],
    "images_seen": 64,
    "elapsed": 2.0,
}


@pytest.mark.parametrize(
    "state, problem",
    [
        (7, "a int, not an object"),
        ({**GOOD_CURVE, "points": 5}, "curve is not a list of objects"),
        ({**GOOD_CURVE, "elapsed": float("nan")}, "elapsed is nan, not a finite number"),
        ({**GOOD_CURVE, "images_seen": "64"}, "images_seen is a str, not a number"),
        ({**GOOD_CURVE, "images_seen": 64.5}, "images_seen is 64.5, not a whole number"),
        ({**GOOD_CURVE, "points": [{"time_s": "1", "images": 64}]}, r"curve\[0\].time_s is a str"),
        ({**GOOD_CURVE, "points": [{"time_s": 1.0, "images": 64, "bpd": float("inf")}]}, r"curve\[0\].bpd is inf"),
    ],
)
def test_a_resume_checkpoints_damaged_learning_curve_state_is_one_paragraph(state, problem):
    from pixel_lightning.errors import CheckpointError

    curve = LearningCurve()
    with pytest.raises(
        CheckpointError, match=f"^The learning-curve state of the resume checkpoint cannot be used: {problem}"
    ) as error:
        curve.load_state_dict(state)
    assert "\n" not in str(error.value) and "ckpt_path" in str(error.value)
    LearningCurve().load_state_dict(GOOD_CURVE)  # what state_dict writes is taken


@pytest.mark.parametrize("total", [1e308, float("inf"), -1.0, "12"])
def test_run_record_totals_beyond_any_measurement_stay_unknown_and_the_record_stays_json(total, tmp_path, caplog):
    from pixel_lightning.callbacks.run_record import EARLIER_TOTALS

    record = RunRecord(str(tmp_path))
    record.load_state_dict({**dict.fromkeys(EARLIER_TOTALS, 1.0), "images": total})
    assert record.earlier is None and "run-record totals are unusable" in caplog.text
    record.load_state_dict(dict.fromkeys(EARLIER_TOTALS, 2.0))
    assert record.earlier == dict.fromkeys(EARLIER_TOTALS, 2.0)


def test_a_record_is_strict_json_whatever_it_is_given(tmp_path):
    import json

    from pixel_lightning.records import write_record

    path = write_record(
        tmp_path,
        {
            "model": "m",
            "status": "failed",
            "test_nll": float("nan"),
            "epochs": 1e308 * 10,
            "curve": [{"time_s": 1.0, "images": 4, "bpd": float("-inf")}],
        },
    )
    saved = json.loads(path.read_text(), parse_constant=lambda constant: pytest.fail(f"{constant} in {path}"))
    assert saved["test_nll"] is None and saved["epochs"] is None and saved["curve"][0]["bpd"] is None
