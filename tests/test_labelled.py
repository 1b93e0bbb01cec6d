"""Labelled images for the FID classifier: CIFAR-10 labels from every layout, MNIST labels in the
data module's levels."""

import numpy as np
import pytest
from support import real_data_dir, requires_data
from test_data import cifar_members, grey_images, write_folder, write_tarball

from pixel_lightning.data import BinarizedMNISTDataModule, CIFAR10DataModule, MNISTDataModule
from pixel_lightning.data.formats import read_cifar_batch_labels, read_cifar_npz, read_cifar_pickles
from pixel_lightning.data.labelled import labelled_split
from pixel_lightning.errors import DataError


def test_cifar_labels_round_trip_from_tarball_folder_and_npz(tmp_path):
    test = grey_images(7, 5, (3, 32, 32))
    members = cifar_members(grey_images(10, 4, (3, 32, 32)), test)  # labels i % 10, as the fixture writes them
    for source in (write_tarball(tmp_path / "c.tar.gz", members), write_folder(tmp_path / "batches", members)):
        labels = read_cifar_pickles(source, ["test_batch"], read_cifar_batch_labels)
        np.testing.assert_array_equal(labels, np.arange(7) % 10)
    np.savez(tmp_path / "cifar10_test.npz", x=test.transpose(0, 2, 3, 1), y=np.array([3, 1, 4, 1, 5, 9, 2], np.uint8))
    np.testing.assert_array_equal(read_cifar_npz(tmp_path / "cifar10_test.npz", key="y"), [3, 1, 4, 1, 5, 9, 2])
    np.savez(tmp_path / "bad.npz", x=test.transpose(0, 2, 3, 1), y=np.full(7, 10, np.uint8))
    with pytest.raises(DataError, match="class numbers 0..9"):
        read_cifar_npz(tmp_path / "bad.npz", key="y")


@requires_data
@pytest.mark.parametrize(
    "make, levels",
    [
        (lambda d: BinarizedMNISTDataModule(d), 2),
        (lambda d: MNISTDataModule(d, bits=3), 8),
        (lambda d: MNISTDataModule(d, binarize="dynamic"), 2),
        (lambda d: CIFAR10DataModule(d, bits=5), 32),
    ],
    ids=["binarized_mnist", "mnist-3bit", "mnist-dynamic", "cifar10-5bit"],
)
def test_labelled_test_split_is_in_the_data_modules_levels(make, levels):
    datamodule = make(real_data_dir())
    images, labels = labelled_split(datamodule, "test")
    assert len(images) == len(labels) == 10000 and images.shape[1:] == datamodule.shape
    assert images.max() == levels - 1 and images.min() == 0
    assert set(np.unique(labels)) == set(range(10))
