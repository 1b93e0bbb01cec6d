"""Train a model (autoregressive, or the DCGAN baseline): `python train.py model=row_lstm data=cifar10 ...`,
the same as the installed command pixel-train (pixel_lightning/commands/train.py)."""

from pixel_lightning.commands.train import run

if __name__ == "__main__":
    run()
