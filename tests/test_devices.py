"""A device without float64 (Apple's MPS), simulated: the NLL sums stay exact float64 sums on the
CPU, no float64 tensor is ever made on that device, and sample.py takes device=mps."""

from __future__ import annotations

import pytest
import torch
from support import tiny_model
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pixel_lightning import metrics
from pixel_lightning.errors import UserError
from pixel_lightning.metrics import NegativeLogLikelihood
from pixel_lightning.sample import pick_device


class RefuseFloat64On(TorchDispatchMode):
    """Fail any operation that makes a float64 tensor on `device_type`, as MPS does."""

    def __init__(self, device_type: str):
        super().__init__()
        self.device_type = device_type

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(result):
            if (
                isinstance(tensor, torch.Tensor)
                and tensor.dtype == torch.float64
                and tensor.device.type == self.device_type
            ):
                raise TypeError(f"{func} made a float64 tensor on {self.device_type}, which has no float64")
        return result


def test_a_model_moved_to_a_device_without_float64_keeps_its_sums_on_the_cpu(monkeypatch):
    monkeypatch.setattr(metrics, "DEVICES_WITHOUT_FLOAT64", {"mps", "meta"})  # meta plays MPS
    model = tiny_model()
    with RefuseFloat64On("meta"):
        model.to("meta")  # as Lightning moves the model (and its metrics) to the device
        model.val_nll.update(torch.full((8,), 3.0, device="meta"))  # a batch's NLLs, float32 on the device
    for metric in (model.train_nll, model.val_nll, model.test_nll):
        assert (metric.nats_sum.device.type, metric.nats_sum.dtype) == ("cpu", torch.float64)
        assert metric.images.device.type == "meta"
    assert [batch.device.type for batch in model.val_nll.pending] == ["meta"]  # kept as it came: no copy per step


def test_without_float64_the_sum_is_the_exact_float64_sum(monkeypatch):
    # float32 batches whose float32 running sum loses most of the small parts
    batches = [
        torch.full((1000,), 1e4, dtype=torch.float32) + torch.rand(1000, generator=torch.Generator().manual_seed(i))
        for i in range(30)
    ]
    exact = torch.cat(batches).double().sum() / 30000
    float32_running = sum((batch.sum() for batch in batches), torch.tensor(0.0)) / 30000
    assert abs(float32_running.item() - exact.item()) > 1e-4  # what float32 accumulation would report
    with_float64 = NegativeLogLikelihood(dims=784)
    for batch in batches:
        with_float64.update(batch)
    monkeypatch.setattr(metrics, "DEVICES_WITHOUT_FLOAT64", {"cpu"})  # this CPU plays a device without float64
    without = NegativeLogLikelihood(dims=784)
    for batch in batches:
        without.update(batch)
    assert len(without.pending) == 30 and without.nats_sum.item() == 0.0  # summed at compute, on the CPU
    value = without.compute()["nll"].item()
    assert value == pytest.approx(exact.item(), rel=1e-7) and value == with_float64.compute()["nll"].item()
    without.reset()
    assert without.pending == [] and without.images.item() == 0


def test_sample_takes_device_mps_where_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(
        UserError,
        match=r"device=mps was asked for but no Apple GPU \(MPS\) is available\. Use "
        r"device=cpu or device=auto\.",
    ):
        pick_device("mps")
    assert pick_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("mps") == torch.device("mps") and pick_device("auto") == torch.device("mps")


def test_trainer_mps_is_one_apple_gpu_with_the_default_trainers_settings(tmp_path):
    from test_configs import compose_train

    trainer, default = (compose_train(overrides, tmp_path).trainer for overrides in (["trainer=mps"], []))
    assert (trainer.accelerator, trainer.devices) == ("mps", 1)
    assert {key: value for key, value in trainer.items() if key != "accelerator"} == {
        key: value for key, value in default.items() if key != "accelerator"
    }
