"""Evaluate a checkpoint: `python eval.py ckpt_path=<file.ckpt>` prints its test NLL, bits/dim, sampling
time and FID, and writes them as <run>/record.json; the same as the installed command pixel-eval
(pixel_lightning/commands/eval.py)."""

from pixel_lightning.commands.eval import run

if __name__ == "__main__":
    run()
