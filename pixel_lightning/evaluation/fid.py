"""Sample quality, offline: FID and KID in the features of the project's own classifier.

torchmetrics' `FrechetInceptionDistance` does the arithmetic, with `feature=` the cached
classifier of feature_net.py instead of Inception-v3 (so neither torch-fidelity nor a download
is needed). The score is therefore not comparable with published FIDs, and it is always
labelled "FID (<classifier>, test acc <x>%)". The real statistics (`num_real` test images
drawn with a fixed seed) are computed once per dataset and cached beside the classifier. FID is biased upwards for
few samples: compare scores of equal `num_samples` only.

KID (Binkowski et al., 2018, *Demystifying MMD GANs*, section 4) is torchmetrics' `poly_mmd` (the
arithmetic of its `KernelInceptionDistance`) in the same features: the unbiased estimate of the
squared MMD with a cubic polynomial kernel, averaged over random subsets, so it is unbiased at small
N and comes with a standard deviation over those subsets. It is labelled like the FID ("KID
(<classifier>, ...)").

Nothing here touches the global random generators (training's streams, CPU and CUDA): the samples,
the real subset and KID's subsets come from generators of their own.

The same classifier gives, for one more pass of its small head over the samples, the
classifier-based Inception Score: exp(E_x KL(p(y|x) || p(y))), between 1 and the 10 classes, and
the number of classes its argmax gives at least half their fair share (N / (2 classes)) of the
samples: both fall when a model collapses onto a few modes. For a class-conditional model the
samples are drawn in equal numbers per class (label i % classes for sample i), and the classifier
also gives the label accuracy: the fraction of samples it classifies as the label they were drawn for.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import poly_mmd

from pixel_lightning.data.datamodule import ImageDataModule, image_of
from pixel_lightning.errors import UserError
from pixel_lightning.evaluation.feature_net import CachedClassifier, FeatureNet, read_cache, to_unit
from pixel_lightning.files import atomic_write

REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


def fitting_states(saved: dict, metric: FrechetInceptionDistance) -> dict[str, torch.Tensor]:
    """The real statistics (REAL_STATES) of a cache file, if they are tensors of the metric's shapes."""
    states = {name: saved[name] for name in REAL_STATES}
    for name, value in states.items():
        if not isinstance(value, torch.Tensor) or value.shape != getattr(metric, name).shape:
            raise ValueError(f"{name} is not a tensor of shape {tuple(getattr(metric, name).shape)}")
    return states


def fitting_features(saved: torch.Tensor, count: int) -> torch.Tensor:
    """The real images' features of a cache file, if they are a (count, F) float tensor."""
    if not isinstance(saved, torch.Tensor) or saved.ndim != 2 or len(saved) != count or not saved.is_floating_point():
        raise ValueError(f"not a ({count}, features) float tensor")
    return saved


def fid_label(classifier_name: str, accuracy: float) -> str:
    return f"FID ({classifier_name}, test acc {100 * accuracy:.1f}%)"


def real_subset(dataset, count: int) -> torch.Tensor:
    """`count` test images drawn with a fixed seed (N, C, H, W): files such as binarized MNIST's
    are sorted by class, so their first images are not a sample of the data."""
    return labelled_subset(dataset, count)[0]


def labelled_subset(dataset, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images of `real_subset` and their labels (N,) when the items are (image, label) pairs
    (a class-conditional model's data), else None."""
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:count]
    items = [dataset[int(i)] for i in chosen.sort().values]
    images = torch.stack([image_of(item) for item in items])
    return images, torch.stack([torch.as_tensor(item[1]) for item in items]) if isinstance(items[0], tuple) else None


def frechet_metric(net: FeatureNet) -> FrechetInceptionDistance:
    """FrechetInceptionDistance on `net`'s features (images given as floats in [0, 1]).

    The score is computed by one process (rank zero under DDP) on the samples it drew itself, so
    the metric must not wait for the other processes to sync states they never had."""
    return FrechetInceptionDistance(feature=net, reset_real_features=False, sync_on_compute=False)


@torch.no_grad()
def update_in_batches(
    metric: FrechetInceptionDistance, images: torch.Tensor, levels: int, real: bool, batch_size: int = 1000
) -> None:
    for start in range(0, len(images), batch_size):
        metric.update(to_unit(images[start : start + batch_size], levels), real=real)


@torch.no_grad()
def features(net: FeatureNet, images: torch.Tensor, levels: int, batch_size: int = 1000) -> torch.Tensor:
    """The classifier's features of integer-level images (N, C, H, W) -> (N, F)."""
    return torch.cat(
        [net(to_unit(images[start : start + batch_size], levels)) for start in range(0, len(images), batch_size)]
    )


def kernel_distance(
    real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID (mean, std over `subsets` random subsets of min(subset_size, N) features each) between
    two feature sets (N, F): KernelInceptionDistance.compute's loop, with its subsets drawn from a
    generator of their own (seeded: the score is reproducible), not from the global one."""
    size = min(subset_size, len(real), len(fake))
    real, fake, generator = real.double().cpu(), fake.double().cpu(), torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        real_subset = real[torch.randperm(len(real), generator=generator)[:size]]
        fake_subset = fake[torch.randperm(len(fake), generator=generator)[:size]]
        scores.append(poly_mmd(real_subset, fake_subset))  # degree 3, gamma 1/F, coef 1: the metric's defaults
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False))


def classes_covered(logits: torch.Tensor) -> int:
    """Classes that the argmax of `logits` (N, classes) gives at least half their fair share of N."""
    counts = torch.bincount(logits.argmax(1), minlength=logits.shape[1])
    return int((2 * logits.shape[1] * counts >= len(logits)).sum())


def frechet_distance(net: FeatureNet, real: torch.Tensor, fake: torch.Tensor, levels: int) -> float:
    """FID between two sets of integer-level images (N, C, H, W)."""
    metric = frechet_metric(net)
    update_in_batches(metric, real, levels, real=True)
    update_in_batches(metric, fake, levels, real=False)
    return float(metric.compute())


@torch.no_grad()
def classifier_score(net: FeatureNet, images: torch.Tensor, levels: int) -> float:
    """The Inception Score computed with the classifier: exp(mean KL(p(y|x) || p(y)))."""
    return inception_score(net.classify(to_unit(images, levels)))


def inception_score(logits: torch.Tensor) -> float:
    """exp(mean KL(p(y|x) || p(y))) of class logits (N, classes)."""
    log_p = torch.log_softmax(logits.double(), dim=1)  # (N, classes)
    log_marginal = torch.logsumexp(log_p, dim=0) - np.log(len(logits))  # log p(y)
    return float(torch.exp((log_p.exp() * (log_p - log_marginal)).sum(1).mean()))


def label_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of samples whose class `logits` (N, classes) pick their `labels` (N,)."""
    return float((logits.argmax(1) == labels.to(logits.device)).double().mean())


def draw_samples(
    model: pl.LightningModule,
    num_samples: int,
    batch_size: int,
    temperature: float,
    seed: int,
    labels: torch.Tensor | None = None,
):
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
    them against `num_real` test images of its data module (drawn with a fixed seed).

    Args:
        num_samples: generated images (0 turns sampling and the scores off).
        num_real: real test images for the reference statistics (at most the test split).
        batch_size: images sampled at once.
        temperature, seed: of the sampling.
        cache_dir: where the classifier and the real statistics are cached (writable; never
            the data folder).
        classifier: train_classifier's settings (width, num_features, epochs, batch_size, lr,
            seed, train_images).
        kid_subsets, kid_subset_size: KID's random subsets (their size at most the samples').
    """

    def __init__(
        self,
        num_samples: int = 256,
        num_real: int = 10000,
        batch_size: int = 64,
        temperature: float = 1.0,
        seed: int = 0,
        cache_dir: str = "logs/cache",
        classifier: dict | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
    ):
        if num_samples == 1 or num_samples < 0 or num_real < 2:
            raise ValueError("fid.num_samples must be 0 (off) or >= 2, and fid.num_real >= 2")
        self.num_samples, self.num_real, self.batch_size = num_samples, num_real, batch_size
        self.temperature, self.seed = temperature, seed
        self.cache_dir = Path(cache_dir)
        self.classifier_settings = dict(classifier or {})
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size

    def check_usable(self, datamodule: ImageDataModule) -> None:
        """Before training or testing, what the score needs at the end of it, so that a run never fails
        after hours for want of it: a classifier that can be trained for the data (a labelled dataset;
        DataError otherwise) and a cache folder it can be written to."""
        if self.num_samples == 0:
            return
        CachedClassifier(datamodule, self.cache_dir, self.classifier_settings)  # names the labelled dataset
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.cache_dir):
                pass
        except OSError as err:
            raise UserError(
                f"fid.cache_dir={self.cache_dir} cannot be written ({err.strerror or err}): the sample-quality step "
                "at the end of the run caches its classifier and the real images' statistics there. Set "
                "fid.cache_dir=<a writable folder> (or the environment variable PIXEL_CACHE_DIR), or turn the score "
                "off with fid.num_samples=0."
            ) from err

    def evaluate(self, model: pl.LightningModule, datamodule: ImageDataModule) -> tuple[dict, torch.Tensor | None]:
        """Record fields (sample_time_per_image_s, fid, fid_label, classifier_score, kid, kid_std,
        classes_covered, and label_accuracy for a class-conditional model) and the samples; all None
        when num_samples is 0."""
        if self.num_samples == 0:
            return dict.fromkeys(
                (
                    "sample_time_per_image_s",
                    "fid",
                    "fid_label",
                    "classifier_score",
                    "kid",
                    "kid_std",
                    "classes_covered",
                    "label_accuracy",
                )
            ), None
        classes = getattr(model, "classes", 0)
        labels = torch.arange(self.num_samples) % classes if classes else None
        samples, seconds = draw_samples(model, self.num_samples, self.batch_size, self.temperature, self.seed, labels)
        cached = CachedClassifier(datamodule, self.cache_dir, self.classifier_settings)
        net, acc = cached.load()
        metric = frechet_metric(net)
        self._load_real_statistics(metric, datamodule, cached)
        update_in_batches(metric, samples, datamodule.levels, real=False)
        fake = features(net, samples, datamodule.levels)
        kid, kid_std = kernel_distance(
            self.real_features(net, datamodule, cached), fake, self.kid_subsets, self.kid_subset_size
        )
        with torch.no_grad():
            logits = net.head(fake)
        fields = {
            "sample_time_per_image_s": seconds,
            "fid": float(metric.compute()),
            "fid_label": fid_label(cached.name, acc),
            "classifier_score": inception_score(logits),
            "kid": kid,
            "kid_std": kid_std,
            "classes_covered": classes_covered(logits),
            "label_accuracy": None if labels is None else label_accuracy(logits, labels),
        }
        return fields, samples

    def kid(self, model: pl.LightningModule, datamodule: ImageDataModule, num_samples: int) -> tuple[float, float]:
        """KID (mean, std) of `num_samples` fresh samples: the learning curve of a model without a likelihood."""
        samples, _ = draw_samples(model, num_samples, self.batch_size, self.temperature, self.seed)
        cached = CachedClassifier(datamodule, self.cache_dir, self.classifier_settings)
        net, _ = cached.load()
        return kernel_distance(
            self.real_features(net, datamodule, cached),
            features(net, samples, datamodule.levels),
            self.kid_subsets,
            self.kid_subset_size,
        )

    def _real(self, datamodule: ImageDataModule, cached: CachedClassifier, kind: str) -> tuple[torch.Tensor, Path]:
        """The real images and the cache file of their `kind` of statistics (named by their digest)."""
        datamodule.setup("test")
        real = real_subset(datamodule.test_dataset, self.num_real)
        digest = hashlib.sha1(real.numpy().tobytes()).hexdigest()[:10]
        return real, cached.path.with_name(f"{cached.path.stem}-{kind}-{digest}.pt")

    def real_features(self, net: FeatureNet, datamodule: ImageDataModule, cached: CachedClassifier) -> torch.Tensor:
        """The classifier's features of the real images (num_real, F), cached beside it."""
        real, path = self._real(datamodule, cached, "realfeatures")
        saved = read_cache(path, "real features", lambda saved: fitting_features(saved, len(real)))
        if saved is not None:
            return saved
        real_features = features(net, real, datamodule.levels)
        _save(real_features, path)
        return real_features

    def _load_real_statistics(
        self, metric: FrechetInceptionDistance, datamodule: ImageDataModule, cached: CachedClassifier
    ) -> None:
        real, path = self._real(datamodule, cached, "real")
        saved = read_cache(path, "real statistics", lambda saved: fitting_states(saved, metric))
        if saved is not None:
            for name, value in saved.items():
                setattr(metric, name, value)
            return
        update_in_batches(metric, real, datamodule.levels, real=True)
        _save({name: getattr(metric, name) for name in REAL_STATES}, path)


def _save(value, path: Path) -> None:
    """torch.save atomically and durably: a parallel job never reads half a file, nor a crash leaves one."""
    with atomic_write(path, "the sample-quality cache") as f:
        torch.save(value, f)
