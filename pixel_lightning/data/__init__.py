"""Datasets as LightningDataModules yielding uint8 images of integer levels (with their labels for
class-conditional models)."""

from pixel_lightning.data.datamodule import (
    BinarizedMNISTDataModule,
    CIFAR10DataModule,
    ImageDataModule,
    MNISTDataModule,
)

__all__ = ["BinarizedMNISTDataModule", "CIFAR10DataModule", "ImageDataModule", "MNISTDataModule"]
