"""Class-conditional nets: a learned embedding of the label added as a bias to every layer.

*Conditional Image Generation with PixelCNN Decoders* (van den Oord et al., 2016), section 2.3:
for a conditioning vector h (here the one-hot label y), each layer's gated unit becomes
tanh(W_f * x + V_f^T h) * sigma(W_g * x + V_g^T h). V^T y of a one-hot y is a row of V: a learned
embedding of the label, the same at every position. We add such a bias to every layer's gates or
pre-activations, in every net with a likelihood (the LSTMs' gates, PixelCNN's 3x3 conv). A bias
the same at every pixel depends on no pixel, so it changes nothing in a net's causality (tested).
"""

from __future__ import annotations

import torch
import torch.nn as nn


class LabelBiases(nn.Module):
    """Labels (B,) long in [0, classes) -> one bias (B, widths[i]) per layer i.

    The embeddings start at zero, so a conditional net starts as the unconditional one and the
    labels' effect is all learned.
    """

    def __init__(self, classes: int, widths: list[int]):
        super().__init__()
        if classes < 1:
            raise ValueError(f"classes must be >= 1, got {classes}")
        self.classes = classes
        self.embeddings = nn.ModuleList(nn.Embedding(classes, width) for width in widths)
        for embedding in self.embeddings:
            nn.init.zeros_(embedding.weight)

    def forward(self, label: torch.Tensor) -> list[torch.Tensor]:  # (B,) -> [(B, widths[i])]
        return [embedding(label) for embedding in self.embeddings]


def label_biases(biases: LabelBiases | None, label: torch.Tensor | None, layers: int) -> list[dict]:
    """The keyword inputs `label_bias` of each of `layers` layers, given a net's LabelBiases (None
    when unconditional) and the label; a missing or unexpected label is an error."""
    if biases is None:
        if label is not None:
            raise ValueError("this net is unconditional (classes=0): it takes no label")
        return [{} for _ in range(layers)]
    if label is None:
        raise ValueError(f"this net is class-conditional ({biases.classes} classes): pass label (B,)")
    return [{"label_bias": bias} for bias in biases(label)]
