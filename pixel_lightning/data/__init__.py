"""Datasets as LightningDataModules yielding uint8 images of integer levels (with their labels for
class-conditional models). The streamed one, pixel_lightning.data.streaming (litdata chunks), is
imported only where used."""

from pixel_lightning.data.cifar10 import CIFAR10DataModule
from pixel_lightning.data.datamodule import ImageDataModule
from pixel_lightning.data.mnist import BinarizedMNISTDataModule, MNISTDataModule

__all__ = ["BinarizedMNISTDataModule", "CIFAR10DataModule", "ImageDataModule", "MNISTDataModule"]
