"""Datasets as LightningDataModules yielding unlabelled uint8 images of integer levels. The streamed
one, pixel_lightning.data.streaming (litdata chunks; labels optional), is imported only where used."""

from pixel_lightning.data.datamodule import (
    BinarizedMNISTDataModule,
    CIFAR10DataModule,
    ImageDataModule,
    MNISTDataModule,
)

__all__ = ["BinarizedMNISTDataModule", "CIFAR10DataModule", "ImageDataModule", "MNISTDataModule"]
