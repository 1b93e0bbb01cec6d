"""The feature network of the sample-quality score: a small classifier of the project's own.

FID (Heusel et al., 2017) compares Gaussians fitted to the features of real and generated images
in a classifier's penultimate layer. Its usual Inception-v3 weights cannot be downloaded here and
were never meant for 28x28 binary digits, so the classifier is this small CNN, trained with the
dataset's labels (data/labelled.py) on its training file, deterministically under its seed (on a
CPU), on first use. It is cached as `<cache_dir>/<name>-<hash of its settings>.pt` (weights and
test accuracy, loadable weights-only); every score names it and states that accuracy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track
from torch import nn

from pixel_lightning.data.datamodule import ImageDataModule
from pixel_lightning.data.labelled import family, labelled_split
from pixel_lightning.files import atomic_write

log = logging.getLogger(__name__)
T = TypeVar("T")


class FeatureNet(nn.Module):
    """Images as floats in [0, 1] (B, C, H, W) -> features (B, num_features); `classify` adds
    the linear head -> class logits (B, num_classes)."""

    def __init__(self, channels: int, width: int = 16, num_features: int = 64, num_classes: int = 10):
        super().__init__()
        self.num_features = num_features  # read by torchmetrics' FrechetInceptionDistance
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, w, H/2, W/2)
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 2w, H/4, W/4)
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),  # (B, 32w)
            nn.Linear(32 * width, num_features),
            nn.ReLU(),  # (B, F): the FID features
        )
        self.head = nn.Linear(num_features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


def to_unit(levels: torch.Tensor | np.ndarray, num_levels: int) -> torch.Tensor:
    """Integer levels in [0, K-1] -> floats in [0, 1], the classifier's input."""
    return torch.as_tensor(levels).float() / (num_levels - 1)


def train_classifier(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_levels: int,
    width: int = 16,
    num_features: int = 64,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    train_images: int | None = None,
    description: str = "classifier",
) -> tuple[FeatureNet, float]:
    """Train a FeatureNet with Adam on (images, labels); returns it (eval mode) and its test accuracy."""
    images, labels = train
    if train_images is not None:
        images, labels = images[:train_images], labels[:train_images]
    with torch.random.fork_rng(devices=[]):  # the layers draw their initial weights from the global CPU generator:
        torch.default_generator.manual_seed(seed)  # seeded for them alone, then as it was; the CUDA ones untouched
        net = FeatureNet(images.shape[1], width, num_features)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    x, y = to_unit(images, num_levels), torch.as_tensor(labels)
    steps = [(epoch, start) for epoch in range(epochs) for start in range(0, len(x), batch_size)]
    permutation = None
    for epoch, start in track(steps, description=f"Training the {description} (first use)"):
        if start == 0:
            permutation = torch.randperm(len(x), generator=order)
        batch = permutation[start : start + batch_size]
        loss = F.cross_entropy(net.classify(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    return net, accuracy(net, *test, num_levels)


@torch.no_grad()
def accuracy(net: FeatureNet, images: np.ndarray, labels: np.ndarray, num_levels: int, batch_size: int = 1000) -> float:
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = net.classify(to_unit(images[start : start + batch_size], num_levels))
        correct += int((logits.argmax(1) == torch.as_tensor(labels[start : start + batch_size])).sum())
    return correct / len(images)


def read_cache(path: Path, what: str, use: Callable[[Any], T]) -> T | None:
    """`use(contents)` of the cache file `path` (loaded weights-only), or None when there is none.
    A cache is derived data: one that cannot be read or used (truncated, not a weights-only file,
    other contents) is reported in one line and moved aside to `<name>.unreadable`; the caller
    then rebuilds it."""
    if not path.is_file():
        return None
    try:
        return use(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # whatever is wrong with the file, rebuilding it is the remedy
        aside = path.with_name(f"{path.name}.unreadable")
        with contextlib.suppress(FileNotFoundError):  # a parallel job moved it first
            os.replace(path, aside)
        detail = str(err).splitlines()[0] if str(err) else "no detail"
        log.warning(
            "The cached %s %s cannot be used (%s: %s); moved it to %s and rebuilding it.",
            what,
            path,
            type(err).__name__,
            detail,
            aside.name,
        )
        return None


class CachedClassifier:
    """The classifier for a data module's dataset family and levels, trained once and cached.

    `settings` are train_classifier's keyword arguments (width, num_features, epochs, ...); they
    and the data (family, levels) name the cache file, so changing any retrains.
    """

    def __init__(self, datamodule: ImageDataModule, cache_dir: str | Path, settings: dict):
        self.datamodule = datamodule
        self.levels = datamodule.levels
        self.name = f"{family(datamodule)}-{self.levels}level-cnn"
        self.settings = dict(settings)
        key = json.dumps({"name": self.name, **self.settings}, sort_keys=True)
        self.path = Path(cache_dir) / f"{self.name}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"

    def load(self) -> tuple[FeatureNet, float]:
        """(net in eval mode, test accuracy); trains and caches it if the cache has none."""
        cached = read_cache(self.path, "classifier", _from_saved)
        if cached is not None:
            return cached
        train, test = (labelled_split(self.datamodule, split) for split in ("train", "test"))
        with torch.enable_grad():
            net, acc = train_classifier(train, test, self.levels, description=self.name, **self.settings)
        architecture = {
            "channels": self.datamodule.channels,
            "width": net.body[0].out_channels,
            "num_features": net.num_features,
        }
        with atomic_write(self.path, "the sample-quality classifier") as f:  # a parallel job never reads half a file
            torch.save({"state_dict": net.state_dict(), "architecture": architecture, "accuracy": acc}, f)
        log.info("Trained %s: test accuracy %.2f%%, cached in %s", self.name, 100 * acc, self.path)
        return net, acc


def _from_saved(saved: dict[str, Any]) -> tuple[FeatureNet, float]:
    net = FeatureNet(**saved["architecture"])
    net.load_state_dict(saved["state_dict"])
    return net.eval(), float(saved["accuracy"])
