"""Sample from a trained model: `python sample.py ckpt_path=<file.ckpt> num_samples=16`, the same as the
installed command pixel-sample (pixel_lightning/commands/sample.py)."""

from pixel_lightning.commands.sample import run

if __name__ == "__main__":
    run()
