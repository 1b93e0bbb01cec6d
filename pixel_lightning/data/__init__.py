"""Datasets as LightningDataModules yielding unlabelled uint8 images of integer levels."""

from pixel_lightning.data.datamodule import (
    BinarizedMNISTDataModule,
    CIFAR10DataModule,
    ImageDataModule,
    MNISTDataModule,
)

__all__ = ["BinarizedMNISTDataModule", "CIFAR10DataModule", "ImageDataModule", "MNISTDataModule"]
