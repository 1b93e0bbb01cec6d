"""`python -m pixel_lightning.compare <folder>`: the comparison table, plot and side-by-side
picture of the runs under a folder (see pixel_lightning/evaluation/compare.py)."""

from pixel_lightning.evaluation.compare import main

if __name__ == "__main__":
    main()
