"""The labelled Frechet distance: its classifier, its values on known sets, its caches."""

import re

import numpy as np
import pytest
import torch
from support import REPO, real_data_dir, requires_data
from torch import nn

from pixel_lightning.evaluation.feature_net import CachedClassifier, train_classifier
from pixel_lightning.evaluation.fid import (
    SampleQuality,
    classes_covered,
    classifier_score,
    frechet_distance,
    kernel_distance,
    real_subset,
)

TINY = {"epochs": 2, "train_images": 2000, "width": 8, "num_features": 32}


@pytest.fixture(scope="module")
def mnist():
    if real_data_dir() is None:
        pytest.skip("PIXEL_DATA_DIR is not set: point it at a folder with the datasets (e.g. ../shared/data)")
    from pixel_lightning.data import BinarizedMNISTDataModule

    datamodule = BinarizedMNISTDataModule(real_data_dir())
    datamodule.setup("test")
    return datamodule


@pytest.fixture(scope="module")
def tiny_classifier(mnist, tmp_path_factory):
    return CachedClassifier(mnist, tmp_path_factory.mktemp("cache"), TINY).load()


def test_frechet_distance_is_zero_for_a_set_against_itself_small_between_halves_large_against_noise(
    mnist, tiny_classifier
):
    net, _ = tiny_classifier
    test = real_subset(mnist.test_dataset, 4000)  # a fixed-seed sample: the file is sorted by class
    noise = torch.randint(0, 2, (2000, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    itself = frechet_distance(net, test[:2000], test[:2000], 2)
    halves = frechet_distance(net, test[::2], test[1::2], 2)
    against_noise = frechet_distance(net, test[:2000], noise, 2)
    assert abs(itself) < 1e-6
    assert 0 < halves < 0.02 * against_noise


class FixedLogits(nn.Module):
    """A 'classifier' whose logits are given, to check the score against closed forms."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def classify(self, images):
        return self.logits


def test_classifier_score_matches_its_closed_forms():
    images = torch.zeros(40, 1, 2, 2, dtype=torch.long)
    confident_balanced = 50.0 * torch.eye(10).repeat(4, 1)  # each class 4 times, p(y|x) ~ one-hot
    assert classifier_score(FixedLogits(confident_balanced), images, 2) == pytest.approx(10.0, rel=1e-6)
    assert classifier_score(FixedLogits(torch.zeros(40, 10)), images, 2) == pytest.approx(1.0)
    two_classes = torch.zeros(40, 10)
    two_classes[:20, 0] = two_classes[20:, 1] = 50.0
    assert classifier_score(FixedLogits(two_classes), images, 2) == pytest.approx(2.0, rel=1e-6)


def test_classifier_training_is_deterministic_under_its_seed():
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 2, (300, 1, 8, 8), dtype=np.uint8), rng.integers(0, 10, 300)
    runs = [
        train_classifier((images, labels), (images, labels), 2, width=4, num_features=8, epochs=1, batch_size=32)
        for _ in range(2)
    ]
    for first, second in zip(runs[0][0].state_dict().values(), runs[1][0].state_dict().values()):
        assert torch.equal(first, second)
    assert runs[0][1] == runs[1][1]


class Uniform(nn.Module):
    """A stand-in model under the record contract: uniform random binary 28x28 images."""

    levels, image_shape = 2, (1, 28, 28)

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    @property
    def device(self):
        return self.anchor.device

    def sample(self, n, temperature=1.0, generator=None):
        return torch.randint(0, 2, (n, *self.image_shape), generator=generator, device=self.device)


@requires_data
def test_sample_quality_labels_its_score_and_caches_classifier_and_real_statistics(mnist, tmp_path):
    quality = SampleQuality(num_samples=6, num_real=300, batch_size=4, cache_dir=str(tmp_path), classifier=TINY)
    fields, samples = quality.evaluate(Uniform(), mnist)
    assert samples.shape == (6, 1, 28, 28)
    label = re.fullmatch(r"FID \(mnist-2level-cnn, test acc (\d+\.\d)%\)", fields["fid_label"])
    _, accuracy = CachedClassifier(mnist, tmp_path, TINY).load()
    assert label and float(label.group(1)) == round(100 * accuracy, 1)
    assert fields["fid"] > 0 and fields["sample_time_per_image_s"] > 0
    assert fields["kid_std"] > 0 and 1 <= fields["classes_covered"] <= 10
    cached = sorted(path.name for path in tmp_path.iterdir())
    assert len(cached) == 3 and sum("-real-" in name for name in cached) == 1  # classifier, real statistics (FID)
    assert sum("-realfeatures-" in name for name in cached) == 1  # and real features (KID)
    stamps = {path: path.stat().st_mtime_ns for path in tmp_path.iterdir()}
    again, _ = quality.evaluate(Uniform(), mnist)  # same seed, same samples: from the caches
    assert again["fid"] == fields["fid"] and again["kid"] == fields["kid"]
    assert {path: path.stat().st_mtime_ns for path in tmp_path.iterdir()} == stamps


@requires_data
def test_unreadable_caches_are_moved_aside_and_rebuilt_with_one_line_each(mnist, tmp_path, caplog):
    tiniest = {"epochs": 1, "train_images": 500, "width": 4, "num_features": 8}
    quality = SampleQuality(num_samples=6, num_real=100, batch_size=6, cache_dir=str(tmp_path), classifier=tiniest)
    fields, _ = quality.evaluate(Uniform(), mnist)
    (classifier,) = [path for path in tmp_path.iterdir() if "-real" not in path.name]
    (statistics,) = tmp_path.glob("*-real-*")
    (features,) = tmp_path.glob("*-realfeatures-*")
    classifier.write_bytes(classifier.read_bytes()[:300])  # truncated
    torch.save(Uniform(), statistics)  # not a weights-only file
    torch.save(torch.zeros(3), features)  # a weights-only file, but not (num_real, features)
    again, _ = quality.evaluate(Uniform(), mnist)
    assert again["fid"] == fields["fid"] and again["kid"] == fields["kid"]  # rebuilt: deterministic under its seed
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 3
    for path, what in ((classifier, "classifier"), (statistics, "real statistics"), (features, "real features")):
        assert any(
            line.startswith(f"The cached {what} {path} cannot be used (")
            and line.endswith(f"moved it to {path.name}.unreadable and rebuilding it.")
            for line in warnings
        )
        assert (tmp_path / f"{path.name}.unreadable").is_file()
        torch.load(path, weights_only=True)  # rebuilt


@pytest.mark.slow
@requires_data
def test_default_classifier_reaches_its_stated_accuracy(mnist, tmp_path):
    """The README states >= 95% test accuracy for the default classifier on binarized MNIST."""
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "fid" / "default.yaml").classifier)
    _, accuracy = CachedClassifier(mnist, tmp_path, settings).load()
    assert accuracy >= 0.95


def test_kid_is_about_zero_for_one_distribution_clearly_positive_for_a_shifted_one_and_has_a_std():
    generator = torch.Generator().manual_seed(0)
    real, same = torch.randn(2, 600, 16, generator=generator)
    shifted = same + 0.5
    itself, itself_std = kernel_distance(real, same, subsets=50, subset_size=300)
    apart, apart_std = kernel_distance(real, shifted, subsets=50, subset_size=300)
    assert itself_std > 0 and apart_std > 0
    assert abs(itself) < 3 * itself_std  # unbiased: zero within its spread
    assert apart > 10 * apart_std and apart > 100 * abs(itself)
    assert kernel_distance(real, same, subsets=50, subset_size=300) == (itself, itself_std)  # its own seeded subsets


def test_classes_covered_counts_classes_with_at_least_half_their_fair_share():
    predicted = torch.tensor([0] * 50 + [1] * 10 + [2] * 9 + [3] * 11)  # 80 samples, 4 classes: half a share is 10
    logits = torch.nn.functional.one_hot(predicted, 4).float()
    assert classes_covered(logits) == 3  # 50, 10 and 11, not 9
