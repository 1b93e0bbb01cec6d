"""No host read per training step: through train.py's own trainer, with every callback of
conf/callbacks/default.yaml and a logger, tensors are read on the host (`.item()`, `float()`,
`int()`, `.tolist()`, a tensor in an `if`) at Lightning's logging steps only, and what the steps
computed is read there once: on a GPU that read is the one wait for the queued kernels per
`log_every_n_steps` window. The steps' results are told apart from tensors made on the host (the
logged means, which are CPU tensors on any device) by a tensor subclass that the batches carry
and every result of the step inherits."""

import pytest
import pytorch_lightning as pl
import torch
from support import tiny_model
from test_configs import compose_train
from torch.utils.data import DataLoader

from pixel_lightning.jobs import make_trainer

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")
STEPS, EVERY = 16, 4


class StepTensor(torch.Tensor):
    """A batch's images; every tensor computed from them is one too (the default __torch_function__
    keeps the subclass), as every result of a step would be on the device."""

    def __deepcopy__(self, memo):  # ModelCheckpoint copies the epoch's metrics
        return self.clone()


class HostReadCounter(pl.Callback):
    """Attributes every host read of a tensor to the training step (0-based) that made it, from the
    first step's start to the end of the epoch's last step (what Lightning does after it included).

    Not counted: Adam's step counts, which torch keeps on the host on every device (not capturable,
    not fused), so reading them waits for nothing."""

    def __init__(self, monkeypatch):
        self.step: int | None = None
        self.optimizers: list[torch.optim.Optimizer] = []
        self.reads: dict[int, list[str]] = {}  # every read, of any tensor
        self.step_reads: dict[int, int] = {}  # reads of what a training step computed
        self.reading = False
        for name in READS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self.counted(name, original))

    def counted(self, name, original):
        def read(tensor, *args, **kwargs):
            if self.reading:  # a subclass's read comes back here once through __torch_function__
                return original(tensor, *args, **kwargs)
            if self.step is not None and not self.is_optimizer_step_count(tensor):
                self.reads.setdefault(self.step, []).append(name)
                if isinstance(tensor, StepTensor):
                    self.step_reads[self.step] = self.step_reads.get(self.step, 0) + 1
            self.reading = True
            try:
                return original(tensor, *args, **kwargs)
            finally:
                self.reading = False

        return read

    def is_optimizer_step_count(self, tensor) -> bool:
        return any(tensor is state.get("step") for optimizer in self.optimizers for state in optimizer.state.values())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step, self.optimizers = trainer.global_step, trainer.optimizers

    def on_train_epoch_end(self, trainer, pl_module):
        self.step = None


def test_training_steps_read_the_device_once_per_logging_window(monkeypatch, tmp_path):
    overrides = [
        "logger=csv",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        f"trainer.log_every_n_steps={EVERY}",
        "trainer.limit_val_batches=0",
        "callbacks.sample_grid.num_samples=1",
    ]
    trainer, _ = make_trainer(compose_train(overrides, tmp_path))
    counter = HostReadCounter(monkeypatch)
    trainer.callbacks.insert(0, counter)  # its epoch end runs first: the epoch-end work is not counted
    images = torch.randint(0, 2, (STEPS * 2, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    trainer.fit(tiny_model(), DataLoader(images.as_subclass(StepTensor), batch_size=2))

    assert trainer.global_step == STEPS
    logging_steps = {step for step in range(STEPS) if (step + 1) % EVERY == 0}
    assert set(counter.reads) <= logging_steps, counter.reads  # never between logging steps
    assert counter.step_reads == dict.fromkeys(logging_steps, 1), counter.reads  # one read of the window each
    assert "train/loss" in trainer.logged_metrics


@pytest.mark.parametrize("bad, found", [(1, 4), (5, 8)])  # 0-based steps; found at the next logging step
def test_a_nan_loss_between_logging_steps_is_still_named(bad, found, monkeypatch, tmp_path):
    """The sync-free check on the real trainer: the step where the loss went bad, not where it was
    seen; it stops in that logging step, before its update."""
    from pixel_lightning.errors import NonFiniteError

    model = tiny_model()
    step = type(model)._step  # the training step's loss, before it is logged and returned
    monkeypatch.setattr(
        type(model), "_step", lambda self, *a: step(self, *a) * (float("nan") if self.global_step == bad else 1.0)
    )
    overrides = [
        "~logger",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        f"trainer.log_every_n_steps={EVERY}",
        "trainer.limit_val_batches=0",
        "~callbacks.sample_grid",
    ]
    trainer, _ = make_trainer(compose_train(overrides, tmp_path))
    images = torch.randint(0, 2, (STEPS * 2, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    with pytest.raises(NonFiniteError, match=rf"diverged at step {bad + 1} \(epoch 0, batch {bad}\)"):
        trainer.fit(model, DataLoader(images, batch_size=2))
    assert trainer.global_step == found - 1


def test_the_gans_two_optimizer_steps_read_the_device_once_per_logging_window(monkeypatch, tmp_path):
    """Manual optimisation too: DCGAN's losses, D(x) and D(G(z)) wait in its window between logging steps."""
    from pytorch_lightning.loggers import CSVLogger
    from test_dcgan import BINARY_MNIST, make

    from pixel_lightning.callbacks import DivergenceGuard

    counter = HostReadCounter(monkeypatch)
    trainer = pl.Trainer(
        max_epochs=1,
        log_every_n_steps=EVERY,
        accelerator="cpu",
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[counter, DivergenceGuard()],
    )
    images = torch.randint(0, 2, (2 * EVERY * 4, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    trainer.fit(make(BINARY_MNIST), DataLoader(images.as_subclass(StepTensor), batch_size=4))

    logging_steps = {2 * batch for batch in range(2 * EVERY) if (batch + 1) % EVERY == 0}  # global_step: 2 a batch
    assert counter.step_reads == dict.fromkeys(logging_steps, 1), counter.reads
    assert {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"} <= set(trainer.logged_metrics)
