"""DCGAN (Radford, Metz & Chintala, 2016, *Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks*): the GAN baseline of the comparison.

Section 3's guidelines: strided convolutions in the discriminator and fractionally strided ones in
the generator instead of pooling; batch norm in both, except on the generator's output and the
discriminator's input; no hidden fully connected layers (the generator's first layer projects z
and reshapes it to a small feature map, the discriminator's last maps its flattened features to
one logit); ReLU in the generator with tanh on the output, LeakyReLU (slope 0.2) in the
discriminator. Section 4: z uniform in [-1, 1]^100, weights from N(0, 0.02), Adam with lr 2e-4 and
beta1 0.5. Trained with the usual alternating steps (Goodfellow et al., 2014), one discriminator
step then one non-saturating generator step per batch, under manual optimisation.

The architecture is sized from the data config: the generator doubles its feature map n times
from an (H / 2^n, W / 2^n) base, n as large as keeps the base even-sized halving down to >= 4
(28x28: 7x7 base, n = 2; 32x32: 4x4 base, n = 3), with `features` maps at full resolution and
twice as many per halving. Images are scaled from levels [0, K-1] to [-1, 1] as for the
autoregressive models; samples go back to levels by rounding, or for binary data by a Bernoulli
draw or 0.5 threshold on (g(z) + 1) / 2 (`binary_sampling`).

Class-conditional (`condition="class"`, a conditional GAN as in Mirza & Osindero, 2014): the
generator reads [z, e_G(y)], a learned embedding of the label beside the noise, and the
discriminator reads the image with one more input channel, a learned (H, W) map e_D(y) of the
label; batches are then (images, labels), and fakes are drawn for the real batch's labels.

A GAN has no likelihood: this module logs no NLL or bits/dim (a comparison shows them as null),
no validation metric, and cannot complete images. Its losses are not a measure of sample quality,
so the run keeps its latest checkpoint as the "best" one (conf/model/dcgan.yaml). Lightning
counts each optimiser step, so `trainer.global_step` advances by 2 per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import hydra
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from pixel_lightning.logging_steps import LogsStepWindow
from pixel_lightning.models.autoregressive import _plain
from pixel_lightning.settings import check_condition

log = logging.getLogger(__name__)

BINARY_SAMPLING = ("bernoulli", "threshold")


def doublings(height: int, width: int) -> int:
    """How many times the generator doubles its feature map: halve (H, W) while both stay even
    and the halves stay >= 4 (28 -> 14 -> 7: 2; 32 -> 16 -> 8 -> 4: 3)."""
    n = 0
    while height % 2 == 0 and width % 2 == 0 and min(height, width) // 2 >= 4:
        height, width, n = height // 2, width // 2, n + 1
    if n == 0:
        raise ValueError(f"a DCGAN needs an image side that halves to >= 4 at least once, got {height}x{width}")
    return n


class Generator(nn.Sequential):
    """z (B, latent) -> images (B, C, H, W) in (-1, 1)."""

    def __init__(self, latent: int, channels: int, height: int, width: int, features: int):
        n = doublings(height, width)
        base = (height >> n, width >> n)
        widths = [features << k for k in reversed(range(n))]  # at base, ..., at H/2: 2^(n-1) f ... f
        layers: list[nn.Module] = [
            nn.Linear(latent, widths[0] * base[0] * base[1], bias=False),  # project ...
            nn.Unflatten(1, (widths[0], *base)),  # ... and reshape: (B, 2^(n-1) f, H/2^n, W/2^n)
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        ]
        for wide, narrow in zip(widths, widths[1:] + [channels], strict=True):
            layers.append(nn.ConvTranspose2d(wide, narrow, 4, stride=2, padding=1, bias=narrow == channels))
            layers += [nn.BatchNorm2d(narrow), nn.ReLU()] if narrow != channels else [nn.Tanh()]
        super().__init__(*layers)


class Discriminator(nn.Sequential):
    """images (B, C, H, W) in [-1, 1] -> real-vs-fake logits (B,)."""

    def __init__(self, channels: int, height: int, width: int, features: int):
        n = doublings(height, width)
        widths = [features << k for k in range(n)]  # at H/2, ..., at H/2^n: f ... 2^(n-1) f
        layers: list[nn.Module] = []
        for i, (narrow, wide) in enumerate(zip([channels] + widths[:-1], widths, strict=True)):
            layers.append(nn.Conv2d(narrow, wide, 4, stride=2, padding=1, bias=i == 0))
            layers += ([nn.BatchNorm2d(wide)] if i > 0 else []) + [nn.LeakyReLU(0.2)]
        layers += [nn.Flatten(), nn.Linear(widths[-1] * (height >> n) * (width >> n), 1), nn.Flatten(0)]
        super().__init__(*layers)


def init_weights(module: nn.Module) -> None:
    """Section 4: every weight from N(0, 0.02); batch norm scales from N(1, 0.02), shifts 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGAN(LogsStepWindow, pl.LightningModule):
    """A generator and a discriminator trained adversarially on integer images (B, C, H, W).

    Args:
        data: the data config; only channels, height, width and levels are read.
        optimizer: hydra config of a torch optimizer, without `params`; one each for the
            generator and the discriminator.
        latent: dimensions of z.
        features: feature maps of the full-resolution layers (doubled per halving).
        binary_sampling: binary data only: "bernoulli" draws each pixel with probability
            (g(z) + 1) / 2, "threshold" keeps the pixels where it is > 0.5.
        condition: None, or "class": a conditional GAN of the data's `classes` (module docstring).
    """

    lr_setting = "model.optimizer.lr"  # what a diverged run's message tells to lower

    def __init__(
        self,
        data: Mapping,
        optimizer: Mapping,
        latent: int = 100,
        features: int = 32,
        binary_sampling: str = "bernoulli",
        condition: str | None = None,
    ):
        super().__init__()
        if binary_sampling not in BINARY_SAMPLING:
            raise ValueError(f"binary_sampling must be one of {BINARY_SAMPLING}, got {binary_sampling!r}")
        check_condition(condition)
        data = _plain(data)
        # `module` tells checkpoint.load_model which LightningModule to rebuild; the whole data config
        # (its data module too) is what a resume checks and what eval.py and sample.py load.
        self.save_hyperparameters(
            {
                "module": "dcgan",
                "data": data,
                "optimizer": _plain(optimizer),
                "latent": latent,
                "features": features,
                "binary_sampling": binary_sampling,
                "condition": condition,
            }
        )
        self.automatic_optimization = False
        self.image_shape = (int(data["channels"]), int(data["height"]), int(data["width"]))
        self.levels = int(data["levels"])
        self.condition, self.classes = condition, int(data["classes"]) if condition else 0
        channels, height, width = self.image_shape
        # conditional: the label's embedding beside z (G) and as one more image channel (D)
        self.generator = Generator(latent + (latent if self.classes else 0), *self.image_shape, features)
        self.discriminator = Discriminator(channels + (1 if self.classes else 0), height, width, features)
        self.apply(init_weights)
        if self.classes:
            self.label_to_generator = nn.Embedding(self.classes, latent)
            self.label_to_discriminator = nn.Embedding(self.classes, height * width)

    def generate(self, z: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        """z (B, latent), label (B,) if conditional -> images (B, C, H, W) in (-1, 1)."""
        return self.generator(z if label is None else torch.cat([z, self.label_to_generator(label)], dim=1))

    def discriminate(self, images: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        """images (B, C, H, W) in [-1, 1], label (B,) if conditional -> real-vs-fake logits (B,)."""
        if label is not None:
            label_map = self.label_to_discriminator(label).view(len(images), 1, *images.shape[2:])  # (B, 1, H, W)
            images = torch.cat([images, label_map], dim=1)
        return self.discriminator(images)

    def noise(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ U[-1, 1]^latent, (n, latent)."""
        z = torch.rand(num_samples, self.hparams.latent, generator=generator, device=self.device)
        return 2 * z - 1

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        label: torch.Tensor | None = None,
    ):
        """Draw `num_samples` images (n, C, H, W) of integer levels in [0, K-1] (of the classes
        `label` (n,) when conditional).

        `temperature` does not apply to a GAN (there is no likelihood to sharpen): it is accepted
        so that callers can treat every model alike, and ignored, with a warning if it is not 1.
        """
        if temperature != 1.0:
            log.warning("temperature=%s is ignored: a GAN has no distribution to sharpen", temperature)
        was_training = self.training
        self.eval()  # batch norm uses its running statistics
        try:
            unit = (self.generate(self.noise(num_samples, generator), label) + 1) / 2  # (n, C, H, W) in (0, 1)
        finally:
            self.train(was_training)
        if self.levels == 2 and self.hparams.binary_sampling == "bernoulli":
            return torch.bernoulli(unit, generator=generator).long()
        return torch.round(unit * (self.levels - 1)).long().clamp(0, self.levels - 1)

    def training_step(self, batch: torch.Tensor | list[torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        opt_g, opt_d = self.optimizers()
        images, label = batch if self.condition else (batch, None)  # (B, C, H, W), (B,)
        real = images.to(self.dtype) * (2.0 / (self.levels - 1)) - 1.0  # (B, C, H, W) in [-1, 1]
        fake = self.generate(self.noise(len(images)), label)  # (B, C, H, W): the real batch's classes

        # Discriminator: real -> 1, fake -> 0.
        real_logits, fake_logits = self.discriminate(real, label), self.discriminate(fake.detach(), label)  # (B,)
        d_loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        d_loss = d_loss + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()

        # Generator, non-saturating: make the updated discriminator call the fakes real.
        fooled_logits = self.discriminate(fake, label)
        g_loss = F.binary_cross_entropy_with_logits(fooled_logits, torch.ones_like(fooled_logits))
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()

        # Means over each logging window; D(x) and D(G(z)): the discriminator's mean belief that
        # real and fake images are real. A non-finite loss stops training at the logging step.
        self.log_step(
            batch_idx,
            d_loss=d_loss,
            g_loss=g_loss,
            d_real=torch.sigmoid(real_logits).mean(),
            d_fake=torch.sigmoid(fake_logits).mean(),
        )
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    def configure_optimizers(self):
        nets = [[self.generator], [self.discriminator]]
        if self.classes:  # each label embedding trains with the net that reads it
            nets[0].append(self.label_to_generator)
            nets[1].append(self.label_to_discriminator)
        return [
            hydra.utils.instantiate(self.hparams.optimizer, params=[p for net in group for p in net.parameters()])
            for group in nets
        ]
