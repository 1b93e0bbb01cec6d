"""Sample quality and run comparison: the FID feature classifier, the labelled Frechet distance,
and the comparison table of run records."""
