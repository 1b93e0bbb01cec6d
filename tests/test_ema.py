"""Weight averaging (callbacks.ema): the test after training measures the weights validation chose."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging, ModelCheckpoint
from support import tiny_model
from torch.utils.data import DataLoader

from pixel_lightning.train import evaluate_best


class RandomBinaryImages(pl.LightningDataModule):
    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.images = {
            split: torch.randint(0, 2, (32, 1, 4, 4), generator=generator) for split in ("fit", "val", "test")
        }
        self.batch_size = 8

    def train_dataloader(self):
        return DataLoader(self.images["fit"], batch_size=8, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.images["val"], batch_size=8)

    def test_dataloader(self):
        return DataLoader(self.images["test"], batch_size=8)


def mean_nll(state_dict, images):
    model = tiny_model()
    model.load_state_dict(state_dict)
    with torch.no_grad():
        return -model.eval().log_prob(images).double().mean().item()


def test_the_test_after_training_measures_the_averaged_weights_of_the_best_checkpoint(tmp_path):
    torch.manual_seed(0)
    model, data = tiny_model(), RandomBinaryImages()
    checkpoints = ModelCheckpoint(dirpath=tmp_path, monitor="val/nll", mode="min", save_top_k=1)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoints, EMAWeightAveraging(decay=0.8)],
    )
    trainer.fit(model, datamodule=data)
    # Lightning warns that the averaging callback is missing at the test: it is left out on purpose
    evaluate_best(trainer, model, datamodule=data, weights_only=True)
    saved = torch.load(checkpoints.best_model_path, weights_only=True)
    averaged, raw = (
        mean_nll(saved["state_dict"], data.images["test"]),
        mean_nll(saved["current_model_state"], data.images["test"]),
    )
    assert abs(averaged - raw) > 1e-3, "the averaged and raw weights must differ for this test to tell them apart"
    assert abs(float(trainer.callback_metrics["test/nll"]) - averaged) < 1e-4  # float32 sums against float64
