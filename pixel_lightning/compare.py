"""`python -m pixel_lightning.compare <folder> [<folder> ...] [--out <folder>]`: the comparison
(tables, learning curves, verdict, side-by-side samples) of the runs under some folders (see
pixel_lightning/evaluation/compare/)."""

from pixel_lightning.evaluation.compare import main

if __name__ == "__main__":
    main()
