"""Sample quality, offline: a Frechet distance in the features of the project's own classifier.

torchmetrics' `FrechetInceptionDistance` does the arithmetic, with `feature=` the cached
classifier of feature_net.py instead of Inception-v3 (so neither torch-fidelity nor a download
is needed). The score is therefore not comparable with published FIDs, and it is always
labelled "FID (<classifier>, test acc <x>%)". The real statistics (`num_real` test images
drawn with a fixed seed) are computed once per dataset and cached beside the classifier. FID is biased upwards for
few samples: compare scores of equal `num_samples` only.

The same classifier gives, for one more pass of its small head over the samples, the
classifier-based Inception Score: exp(E_x KL(p(y|x) || p(y))), between 1 and the 10 classes.
For a class-conditional model the samples are drawn in equal numbers per class (label i % classes
for sample i), and the classifier also gives the label accuracy: the fraction of samples it
classifies as the label they were drawn for.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from pixel_lightning.data.datamodule import ImageDataModule, image_of
from pixel_lightning.evaluation.feature_net import CachedClassifier, FeatureNet, read_cache, to_unit

REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


def fitting_states(saved: dict, metric: FrechetInceptionDistance) -> dict[str, torch.Tensor]:
    """The real statistics (REAL_STATES) of a cache file, if they are tensors of the metric's shapes."""
    states = {name: saved[name] for name in REAL_STATES}
    for name, value in states.items():
        if not isinstance(value, torch.Tensor) or value.shape != getattr(metric, name).shape:
            raise ValueError(f"{name} is not a tensor of shape {tuple(getattr(metric, name).shape)}")
    return states


def fid_label(classifier_name: str, accuracy: float) -> str:
    return f"FID ({classifier_name}, test acc {100 * accuracy:.1f}%)"


def real_subset(dataset, count: int) -> torch.Tensor:
    """`count` test images drawn with a fixed seed (N, C, H, W): files such as binarized MNIST's
    are sorted by class, so their first images are not a sample of the data."""
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:count]
    return torch.stack([image_of(dataset[int(i)]) for i in chosen.sort().values])


def frechet_metric(net: FeatureNet) -> FrechetInceptionDistance:
    """FrechetInceptionDistance on `net`'s features (images given as floats in [0, 1]).

    The score is computed by one process (rank zero under DDP) on the samples it drew itself, so
    the metric must not wait for the other processes to sync states they never had."""
    return FrechetInceptionDistance(feature=net, reset_real_features=False, sync_on_compute=False)


@torch.no_grad()
def update_in_batches(metric: FrechetInceptionDistance, images: torch.Tensor, levels: int, real: bool,
                      batch_size: int = 1000) -> None:
    for start in range(0, len(images), batch_size):
        metric.update(to_unit(images[start : start + batch_size], levels), real=real)


def frechet_distance(net: FeatureNet, real: torch.Tensor, fake: torch.Tensor, levels: int) -> float:
    """FID between two sets of integer-level images (N, C, H, W)."""
    metric = frechet_metric(net)
    update_in_batches(metric, real, levels, real=True)
    update_in_batches(metric, fake, levels, real=False)
    return float(metric.compute())


@torch.no_grad()
def classifier_score(net: FeatureNet, images: torch.Tensor, levels: int) -> float:
    """The Inception Score computed with the classifier: exp(mean KL(p(y|x) || p(y)))."""
    log_p = torch.log_softmax(net.classify(to_unit(images, levels)).double(), dim=1)  # (N, classes)
    log_marginal = torch.logsumexp(log_p, dim=0) - np.log(len(images))  # log p(y)
    return float(torch.exp((log_p.exp() * (log_p - log_marginal)).sum(1).mean()))


@torch.no_grad()
def label_accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, levels: int) -> float:
    """The fraction of `images` that the classifier assigns to their `labels` (N,)."""
    return float((net.classify(to_unit(images, levels)).argmax(1) == labels.cpu()).double().mean())


def draw_samples(model: pl.LightningModule, num_samples: int, batch_size: int, temperature: float, seed: int,
                 labels: torch.Tensor | None = None):
    """(samples (n, C, H, W) on the CPU, seconds per image), in eval mode without gradients; of
    the classes `labels` (n,) for a class-conditional model."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    was_training, batches = model.training, []
    model.eval()
    try:
        cuda = model.device.type == "cuda"
        start = time.perf_counter()
        with torch.no_grad():
            for first in range(0, num_samples, batch_size):
                n = min(batch_size, num_samples - first)
                label = {} if labels is None else {"label": labels[first : first + n].to(model.device)}
                batches.append(model.sample(n, temperature=temperature, generator=generator, **label))
            if cuda:
                torch.cuda.synchronize(model.device)
        seconds = time.perf_counter() - start
    finally:
        model.train(was_training)
    return torch.cat(batches).cpu(), seconds / num_samples


class SampleQuality:
    """The `fid` config node: draws `num_samples` images from a model (timing them) and scores
    them against the first `num_real` test images of its data module.

    Args:
        num_samples: generated images (0 turns sampling and the score off).
        num_real: real test images for the reference statistics (at most the test split).
        batch_size: images sampled at once.
        temperature, seed: of the sampling.
        cache_dir: where the classifier and the real statistics are cached (writable; never
            the data folder).
        classifier: train_classifier's settings (width, num_features, epochs, batch_size, lr,
            seed, train_images).
    """

    def __init__(self, num_samples: int = 256, num_real: int = 10000, batch_size: int = 64, temperature: float = 1.0,
                 seed: int = 0, cache_dir: str = "logs/cache", classifier: dict | None = None):
        if num_samples == 1 or num_samples < 0 or num_real < 2:
            raise ValueError("fid.num_samples must be 0 (off) or >= 2, and fid.num_real >= 2")
        self.num_samples, self.num_real, self.batch_size = num_samples, num_real, batch_size
        self.temperature, self.seed = temperature, seed
        self.cache_dir = Path(cache_dir)
        self.classifier_settings = dict(classifier or {})

    def evaluate(self, model: pl.LightningModule, datamodule: ImageDataModule) -> tuple[dict, torch.Tensor | None]:
        """Record fields (sample_time_per_image_s, fid, fid_label, classifier_score, and
        label_accuracy for a class-conditional model) and the samples; all None when num_samples is 0."""
        if self.num_samples == 0:
            return {"sample_time_per_image_s": None, "fid": None, "fid_label": None, "classifier_score": None,
                    "label_accuracy": None}, None
        classes = getattr(model, "classes", 0)
        labels = torch.arange(self.num_samples) % classes if classes else None
        samples, seconds = draw_samples(model, self.num_samples, self.batch_size, self.temperature, self.seed, labels)
        cached = CachedClassifier(datamodule, self.cache_dir, self.classifier_settings)
        net, acc = cached.load()
        metric = frechet_metric(net)
        self._load_real_statistics(metric, datamodule, cached)
        update_in_batches(metric, samples, datamodule.levels, real=False)
        fields = {
            "sample_time_per_image_s": seconds,
            "fid": float(metric.compute()),
            "fid_label": fid_label(cached.name, acc),
            "classifier_score": classifier_score(net, samples, datamodule.levels),
            "label_accuracy": None if labels is None else label_accuracy(net, samples, labels, datamodule.levels),
        }
        return fields, samples

    def _load_real_statistics(self, metric: FrechetInceptionDistance, datamodule: ImageDataModule,
                              cached: CachedClassifier) -> None:
        datamodule.setup("test")
        real = real_subset(datamodule.test_dataset, self.num_real)
        digest = hashlib.sha1(real.numpy().tobytes()).hexdigest()[:10]
        path = cached.path.with_name(f"{cached.path.stem}-real-{digest}.pt")
        saved = read_cache(path, "real statistics", lambda saved: fitting_states(saved, metric))
        if saved is not None:
            for name, value in saved.items():
                setattr(metric, name, value)
            return
        update_in_batches(metric, real, datamodule.levels, real=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        torch.save({name: getattr(metric, name) for name in REAL_STATES}, tmp)
        os.replace(tmp, path)
