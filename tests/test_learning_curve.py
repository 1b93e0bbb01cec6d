"""The learning curve: points exactly at the asked intervals on a fake clock, measurement time
excluded from the training clock and added to the time budget, bits/dim against a closed form,
and a curve that survives the test's checkpoint load."""

import math
from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.trainer.states import RunningStage

from pixel_lightning.callbacks.learning_curve import LearningCurve, held_out_bpd


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Measured(LearningCurve):
    """Each measurement takes `cost` seconds on the fake clock and returns the clock it saw."""

    cost = 5.0

    def evaluate(self, trainer, pl_module):
        self.clock.now += self.cost
        return {"bpd": 1.0 / (1 + len(self.points))}


def train(
    curve, clock, steps, seconds_per_step=1.0, batch=16, likelihood=True, datamodule=True, fast_dev_run=0, world_size=1
):
    timer = Timer(duration="00:00:10:00")
    timer._start_time[RunningStage.TRAINING] = 0.0
    trainer = SimpleNamespace(
        is_global_zero=True,
        global_step=0,
        loggers=[],
        callbacks=[timer],
        datamodule=SimpleNamespace() if datamodule else None,  # Measured.evaluate reads none
        fast_dev_run=fast_dev_run,
        world_size=world_size,
    )
    module = SimpleNamespace(device=torch.device("cpu"))
    if likelihood:
        module.log_prob = lambda images: None  # has a likelihood; Measured.evaluate stands in for measuring it
    curve.on_train_start(trainer, module)
    for step in range(steps):
        clock.now += seconds_per_step
        trainer.global_step = step + 1
        curve.on_train_batch_end(trainer, module, None, torch.zeros(batch, 1, 2, 2), step)
    curve.on_train_end(trainer, module)
    return timer


def test_a_fit_on_bare_dataloaders_has_no_held_out_split_so_no_curve(caplog):
    clock = FakeClock()
    curve = Measured(every_seconds=3.0, every_images=64, clock=clock)
    train(curve, clock, steps=10, datamodule=False)
    assert curve.points == []
    assert any("No learning curve for this run" in record.getMessage() for record in caplog.records)


def test_under_ddp_the_images_of_every_process_count():
    clock = FakeClock()
    curve = Measured(every_seconds=None, every_images=64, clock=clock)
    train(curve, clock, steps=4, world_size=2)  # 16 images a step on each of 2 processes
    assert [(point["steps"], point["images"]) for point in curve.points] == [(2, 64), (4, 128)]


def test_a_fast_dev_run_measures_no_curve():
    clock = FakeClock()
    curve = Measured(every_seconds=3.0, every_images=64, clock=clock)
    train(curve, clock, steps=10, fast_dev_run=1)
    assert curve.points == []


def test_points_at_the_asked_times_and_images_with_measurements_off_the_training_clock():
    clock = FakeClock()
    curve = Measured(every_seconds=3.0, every_images=64, clock=clock)
    timer = train(curve, clock, steps=10)  # 1 s and 16 images per step
    times = [point["time_s"] for point in curve.points]
    images = [point["images"] for point in curve.points]
    # every 3 s of training (3, 6, 9) or 64 images (steps 4, 8), and the end (step 10); the 5 s of
    # each measurement never count, else the second point would come at once
    assert times == [3.0, 4.0, 6.0, 8.0, 9.0, 10.0]
    assert images == [48, 64, 96, 128, 144, 160]
    assert [point["steps"] for point in curve.points] == [3, 4, 6, 8, 9, 10]
    assert curve.measuring_s == 6 * Measured.cost
    assert timer._start_time[RunningStage.TRAINING] == 6 * Measured.cost  # the budget is extended as much
    assert set(curve.points[0]) == {"time_s", "images", "steps", "bpd", "bpd_se", "kid", "kid_std"}


def test_a_model_without_likelihood_gets_no_points_when_sample_quality_is_off():
    clock = FakeClock()
    curve = Measured(every_seconds=3.0, clock=clock)  # quality=None, as with fid.num_samples=0
    train(curve, clock, steps=10, likelihood=False)
    assert curve.points == [] and curve.measuring_s == 0


def test_a_long_step_gives_one_point_not_one_per_missed_interval():
    clock = FakeClock()
    curve = Measured(every_seconds=2.0, clock=clock)
    train(curve, clock, steps=2, seconds_per_step=7.0)
    assert [point["time_s"] for point in curve.points] == [7.0, 14.0]


def test_the_test_after_training_keeps_the_whole_curve_but_a_resumed_fit_continues_it():
    clock = FakeClock()
    curve = Measured(every_seconds=3.0, clock=clock)
    train(curve, clock, steps=4)
    saved_midway = {"points": curve.points[:1], "images_seen": 48, "elapsed": 3.0}
    curve.load_state_dict(saved_midway)  # trainer.test loads the best checkpoint after training
    assert len(curve.points) == 2

    resumed = Measured(every_seconds=3.0, clock=clock)
    resumed.load_state_dict(saved_midway)
    train(resumed, clock, steps=3)
    assert [point["time_s"] for point in resumed.points] == [3.0, 6.0]
    assert [point["images"] for point in resumed.points] == [48, 96]


class Uniform(torch.nn.Module):
    """p(x) = 2^-dims for binary images, and one image class twice as likely: known bits/dim."""

    dims = 4

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    @property
    def device(self):
        return self.anchor.device

    def log_prob(self, images):
        bits = self.dims - images.flatten(1).all(1).double()  # the all-ones image: dims - 1 bits
        return -bits * math.log(2)


def test_held_out_bits_per_dim_and_its_standard_error_match_the_closed_form():
    images = torch.zeros(8, 1, 2, 2, dtype=torch.uint8)
    images[:2] = 1  # two all-ones images: 3/4 bits/dim, six at 1 bit/dim
    measured = held_out_bpd(Uniform().train(), images, batch_size=3)
    per_image = torch.tensor([0.75] * 2 + [1.0] * 6, dtype=torch.float64)
    assert measured["bpd"] == pytest.approx(float(per_image.mean()))
    assert measured["bpd_se"] == pytest.approx(float(per_image.std() / math.sqrt(8)))


class GivenLabel(Uniform):
    """p(x | y) = 2^-(dims - y) for every x: a class-conditional model, known bits/dim per label."""

    def log_prob(self, images, label):
        return -(self.dims - label.double()) * math.log(2)


def test_a_class_conditional_models_points_are_its_bits_per_dim_given_each_images_label():
    labels = torch.tensor([0, 3, 1, 1, 2, 0, 3])
    items = [(torch.zeros(1, 2, 2, dtype=torch.uint8), label) for label in labels]  # (image, label): labelled data
    trainer = SimpleNamespace(datamodule=SimpleNamespace(setup=lambda stage: None, val_dataset=items))
    measured = LearningCurve(images=len(items), batch_size=3).evaluate(trainer, GivenLabel().train())
    per_image = (4 - labels.double()) / 4
    assert measured["bpd"] == pytest.approx(float(per_image.mean()))
    assert measured["bpd_se"] == pytest.approx(float(per_image.std() / math.sqrt(len(items))))
