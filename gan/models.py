"""Generator and discriminator networks.

``build_models`` picks the family from ``cfg.arch`` and the per-sample data shape:

- ``mlp`` on images (C, H, W): the textbook MNIST GAN's multilayer perceptrons;
- ``mlp`` on points (D,): small MLPs for 2D toy mixtures;
- ``dcgan`` on square images: transposed-conv G with batch norm, strided-conv D (Radford et al.
  2016), initialised N(0, 0.02).

Every G maps (z, labels) to samples; every D maps (x, labels) to (logits, class_logits). D returns
logits (no sigmoid): the losses in ``gan.losses`` work on logits, which keeps them finite.
Class conditioning gives G a label embedding concatenated to z, and D either a projection term
⟨embed(y), h⟩ (Miyato & Koyama 2018) or an auxiliary classifier head (Odena et al. 2017).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from gan.config import Conditional, TrainConfig, dcgan_supports

IMAGE_SHAPE = (1, 28, 28)  # channels, height, width of MNIST digits


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.2)


def _mlp(sizes: list[int], act: Callable[[], nn.Module], out: nn.Module | None) -> nn.Sequential:
    """Linear layers of the given sizes with ``act()`` between them and ``out`` last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(act())
    if out is not None:
        layers.append(out)
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """(z (B, latent_dim), labels (B,) or None) → samples (B, *shape).

    A conditional G (num_classes > 0) concatenates Embedding(num_classes, min(latent_dim, 128))(y)
    to z, so ``net`` sees ``input_dim`` features, unless ``embed_input`` is False: then the
    subclass conditions its layers itself (DCGAN: ``ClassAffine``). An unconditional G ignores
    labels.
    """

    net: nn.Module  # set by subclasses: (B, input_dim) → (B, prod(shape)) or (B, *shape)

    def __init__(
        self, latent_dim: int, shape: tuple[int, ...], num_classes: int = 0,
        embed_input: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.latent_dim, self.shape, self.num_classes = latent_dim, tuple(shape), num_classes
        embed = num_classes and embed_input
        self.embed = nn.Embedding(num_classes, min(latent_dim, 128)) if embed else None
        self.input_dim = latent_dim + (self.embed.embedding_dim if self.embed is not None else 0)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels (B,)")
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(z).view(-1, *self.shape)


def pack_samples(x: Tensor, m: int) -> Tensor:
    """PacGAN's packing (Lin et al. 2018): (B, C, ...) → (B/m, m·C, ...), consecutive samples
    concatenated along the channel (or, for points, the coordinate) axis, so D judges m samples
    at once; a pack of G's samples that repeat one mode is told apart from m independent reals."""
    # pack j = [x_{jm}, x_{jm+1}, …, x_{jm+m−1}] concatenated on axis 1
    if len(x) % m:
        raise ValueError(f"a batch of {len(x)} does not split into packs of {m}")
    return x.reshape(len(x) // m, m * x.shape[1], *x.shape[2:])


def minibatch_stddev(h: Tensor, group: int) -> Tensor:
    """Minibatch standard deviation (Karras et al. 2018) of features h (B, F) → (B, F + 1): the
    extra feature is, for each group of ``group`` consecutive samples, the mean over features of
    their standard deviation across the group (a collapsed batch has ~0 spread)."""
    # s_g = (1/F) Σ_f sqrt(Var_{i∈g}[h_if] + 1e−8), biased variance, appended to each row of g
    b, f = h.shape
    g = group if b % group == 0 else b  # a batch the groups do not divide: one group
    hg = h.float().view(b // g, g, f)
    std = (hg.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=1)  # (B/g,)
    extra = std.repeat_interleave(g).to(h.dtype).unsqueeze(1)
    return torch.cat([h, extra], dim=1)


class Discriminator(nn.Module):
    """(x (B, *shape), labels (B,) or None) → (logits (B,), class_logits (B, K) or None).

    ``features`` maps x to h (B, feature_dim); ``head`` = Linear(feature_dim, 1) gives ψ(h).
    "projection" adds ⟨embed(y), pool(h)⟩ with embed = Embedding(K, pooled_dim); "acgan" adds a
    class head Linear(feature_dim, K) whose output is class_logits. Otherwise labels are ignored.
    ``pool`` (identity unless given) is where a conv D sums its feature map over positions, as
    Miyato & Koyama do: a projection onto the flattened map would be a per-class pixel template,
    which G satisfies with one image per class (measured: BENCHMARKS.md).
    With ``pack`` m > 1, ``features`` takes packs of m samples (``pack_samples``) and the logits
    are one per pack, (B/m,); with ``mbstd`` g ≥ 2 the head sees ``minibatch_stddev(h, g)``.
    """

    def __init__(
        self, features: nn.Module, feature_dim: int, num_classes: int = 0,
        conditional: Conditional = "none", pool: nn.Module | None = None,
        pooled_dim: int | None = None, pack: int = 1, mbstd: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.pack, self.mbstd = pack, mbstd
        if conditional != "none" and num_classes < 1:
            raise ValueError(f"conditional={conditional!r} needs a dataset with class labels")
        self.num_classes = num_classes if conditional != "none" else 0
        self.conditional = conditional
        self.features = features
        self.head = nn.Linear(feature_dim + (1 if mbstd >= 2 else 0), 1)
        self.pool = pool if pool is not None else nn.Identity()
        proj, acgan = conditional == "projection", conditional == "acgan"
        self.embed = nn.Embedding(num_classes, pooled_dim or feature_dim) if proj else None
        self.classifier = nn.Linear(feature_dim, num_classes) if acgan else None

    def forward(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        h = self.features(pack_samples(x, self.pack) if self.pack > 1 else x)
        logits = self.head(minibatch_stddev(h, self.mbstd) if self.mbstd >= 2 else h).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this projection discriminator needs labels (B,)")
            logits = logits + (self.embed(labels) * self.pool(h)).sum(1)
        class_logits = self.classifier(h) if self.classifier is not None else None
        return logits, class_logits


class SpatialSum(nn.Module):
    """(B, C·H·W) flattened feature maps → (B, C): each channel summed over positions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, h: Tensor) -> Tensor:
        return h.view(len(h), self.channels, -1).sum(2)


class MLPGenerator(Generator):
    """Textbook G: z' → 256 → 512 → 1024 → prod(shape), LeakyReLU(0.2), Tanh (MNIST: 100→…→784)."""

    def __init__(
        self, latent_dim: int = 100, shape: tuple[int, ...] = IMAGE_SHAPE, num_classes: int = 0
    ) -> None:
        super().__init__(latent_dim, shape, num_classes)
        self.net = _mlp([self.input_dim, 256, 512, 1024, math.prod(shape)], _lrelu, nn.Tanh())


class MLPDiscriminator(Discriminator):
    """Textbook D: prod(shape) → 512 → 256 → 1, LeakyReLU(0.2) (784→512→256→1 on MNIST)."""

    def __init__(
        self, shape: tuple[int, ...] = IMAGE_SHAPE, num_classes: int = 0,
        conditional: Conditional = "none", pack: int = 1, mbstd: int = 0,
    ) -> None:  # fmt: skip
        features = nn.Sequential(
            nn.Flatten(), *_mlp([pack * math.prod(shape), 512, 256], _lrelu, _lrelu())
        )
        super().__init__(features, 256, num_classes, conditional, pack=pack, mbstd=mbstd)


class PointGenerator(Generator):
    """Points G: z' → 256 → 256 → 256 → D with ReLU and a linear (unbounded) output."""

    def __init__(self, latent_dim: int, shape: tuple[int, ...], num_classes: int = 0) -> None:
        super().__init__(latent_dim, shape, num_classes)
        self.net = _mlp([self.input_dim, 256, 256, 256, shape[0]], nn.ReLU, None)


class PointDiscriminator(Discriminator):
    """Points D: D → 256 → 256 → 256 → 1 with LeakyReLU(0.2)."""

    def __init__(
        self, shape: tuple[int, ...], num_classes: int = 0, conditional: Conditional = "none",
        pack: int = 1, mbstd: int = 0,
    ) -> None:  # fmt: skip
        features = _mlp([pack * shape[0], 256, 256, 256], _lrelu, _lrelu())
        super().__init__(features, 256, num_classes, conditional, pack=pack, mbstd=mbstd)


def _check_dcgan_shape(shape: tuple[int, ...]) -> None:
    if len(shape) != 3 or shape[1] != shape[2] or not dcgan_supports(shape[1]):
        raise ValueError(
            f"dcgan needs square images (C, s, s) with s a multiple of 4 from 8 to 64, got shape "
            f"{tuple(shape)}; use arch 'mlp' or set image_size"
        )


def _dcgan_init(module: nn.Module) -> None:
    """Radford et al.: conv/linear weights N(0, 0.02), batch-norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class ClassAffine(nn.Module):
    """Conditional batch norm's class part: h · (1 + γ_y) + β_y per feature or channel, with
    (γ_y, β_y) = Embedding(K, 2C)(y), initialised N(0, 0.02) (near the identity, as DCGAN's other
    weights). It follows a batch norm:
    the label shifts and scales the normalised features instead of entering before the norm,
    where its spread across classes would dominate the batch's variance and scale z's part down
    (concatenated labels made the DCGAN G ignore z and draw one image per class: BENCHMARKS.md).
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, 2 * channels)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, h: Tensor, labels: Tensor) -> Tensor:
        # Halves of the embedding, shaped (B, C, 1, …) like h without naming B: a traced export
        # (gan.export) then keeps the batch size variable.
        gamma, beta = self.embed(labels).chunk(2, dim=1)
        for _ in range(h.ndim - 2):
            gamma, beta = gamma.unsqueeze(-1), beta.unsqueeze(-1)
        return h * (1 + gamma) + beta


class DCGANGenerator(Generator):
    """z → Linear(2w·(s/4)²) → BN → ReLU → (2w, s/4, s/4) → ConvT(2w→w, 4, 2, 1) → BN → ReLU
    → ConvT(w→C, 4, 2, 1) → Tanh → (C, s, s); w = width (MNIST, w=64: 128×7×7 → 64×14×14 → 1×28×28).
    ``depth`` adds that many Conv(3, 1, 1) → BN → ReLU blocks at s/4 and at s/2, before each
    upsampling (as in SNGAN's "standard CNN"); each block costs about what the whole G did.
    A conditional G takes z alone and follows every BN with a ``ClassAffine`` of the label.
    """

    net: nn.Sequential

    def __init__(
        self, latent_dim: int, shape: tuple[int, ...], num_classes: int = 0, width: int = 64,
        depth: int = 0,
    ) -> None:  # fmt: skip
        _check_dcgan_shape(shape)
        super().__init__(latent_dim, shape, num_classes, embed_input=False)
        c, q = shape[0], shape[1] // 4

        def norm(channels: int, bn: type[nn.BatchNorm1d | nn.BatchNorm2d]) -> list[nn.Module]:
            affine = [ClassAffine(channels, num_classes)] if num_classes else []
            return [bn(channels), *affine]

        self.net = nn.Sequential(
            nn.Linear(self.input_dim, 2 * width * q * q, bias=False),  # BN follows: no bias
            *norm(2 * width * q * q, nn.BatchNorm1d),
            nn.ReLU(),
            nn.Unflatten(1, (2 * width, q, q)),
            *_conv3_blocks(2 * width, depth, lambda: norm(2 * width, nn.BatchNorm2d), nn.ReLU),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),
            *norm(width, nn.BatchNorm2d),
            nn.ReLU(),
            *_conv3_blocks(width, depth, lambda: norm(width, nn.BatchNorm2d), nn.ReLU),
            nn.ConvTranspose2d(width, c, 4, 2, 1),
            nn.Tanh(),
        )
        _dcgan_init(self.net)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if not self.num_classes:
            return super().forward(z, labels)
        if labels is None:
            raise ValueError("this generator is class-conditional: pass labels (B,)")
        h = z
        for layer in self.net:
            h = layer(h, labels) if isinstance(layer, ClassAffine) else layer(h)
        return h.view(-1, *self.shape)


def _conv3_blocks(
    channels: int, depth: int, norm: Callable[[], list[nn.Module]] | None,
    act: Callable[[], nn.Module],
) -> list[nn.Module]:  # fmt: skip
    """``depth`` × [Conv(channels→channels, 3, 1, 1), *norm(), act]: more layers at one
    resolution (no bias before a norm)."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers.append(nn.Conv2d(channels, channels, 3, 1, 1, bias=norm is None))
        layers += [*norm(), act()] if norm is not None else [act()]
    return layers


class DCGANDiscriminator(Discriminator):
    """(C, s, s) → Conv(C→w, 4, 2, 1) → LReLU(0.2) → Conv(w→2w, 4, 2, 1) → LReLU(0.2) → flatten
    to h, 2w·(s/4)² features (MNIST, w=64: 64×14×14 → 128×7×7 = 6272) → Linear(·, 1). No norms.
    ``depth`` adds that many Conv(3, 1, 1) → LReLU(0.2) blocks after each strided conv.
    """

    def __init__(
        self, shape: tuple[int, ...], num_classes: int = 0, conditional: Conditional = "none",
        width: int = 64, depth: int = 0, pack: int = 1, mbstd: int = 0,
    ) -> None:  # fmt: skip
        _check_dcgan_shape(shape)
        features = nn.Sequential(
            nn.Conv2d(pack * shape[0], width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            *_conv3_blocks(width, depth, None, _lrelu),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            *_conv3_blocks(2 * width, depth, None, _lrelu),
            nn.Flatten(),
        )
        super().__init__(
            features, 2 * width * (shape[1] // 4) ** 2, num_classes, conditional,
            pool=SpatialSum(2 * width), pooled_dim=2 * width, pack=pack, mbstd=mbstd,
        )  # fmt: skip
        _dcgan_init(self)  # embeddings keep torch's N(0, 1)


def _add_spectral_norm(module: nn.Module, kinds: tuple[type[nn.Module], ...]) -> None:
    for m in list(module.modules()):
        if isinstance(m, kinds):
            spectral_norm(m)


def build_models(
    cfg: TrainConfig, shape: tuple[int, ...], num_classes: int
) -> tuple[Generator, Discriminator]:
    """Freshly initialised (G, D) for ``cfg`` and per-sample ``shape``; seed torch first.

    Raises ValueError for combinations no network supports (dcgan on points or odd sizes,
    conditioning without classes).
    """
    shape, cond = tuple(shape), cfg.conditional
    if cond != "none" and num_classes < 1:
        raise ValueError(f"conditional={cond!r} needs a dataset with class labels")
    k = num_classes if cond != "none" else 0
    G: Generator
    D: Discriminator
    if len(shape) == 1:
        if cfg.arch != "mlp":
            raise ValueError(f"arch {cfg.arch!r} needs images (C, H, W); points use arch 'mlp'")
        G = PointGenerator(cfg.latent_dim, shape, k)
        D = PointDiscriminator(shape, k, cond, cfg.pack, cfg.minibatch_std)
    elif len(shape) != 3:
        raise ValueError(f"data must be images (C, H, W) or points (D,), got shape {shape}")
    elif cfg.arch == "mlp":
        G = MLPGenerator(cfg.latent_dim, shape, k)
        D = MLPDiscriminator(shape, k, cond, cfg.pack, cfg.minibatch_std)
    else:
        G = DCGANGenerator(cfg.latent_dim, shape, k, cfg.width, cfg.depth)
        D = DCGANDiscriminator(shape, k, cond, cfg.width, cfg.depth, cfg.pack, cfg.minibatch_std)
    if cfg.spectral_norm in ("d", "both"):
        _add_spectral_norm(D, (nn.Linear, nn.Conv2d, nn.Embedding))
    if cfg.spectral_norm == "both":
        _add_spectral_norm(G, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))
    return G, D
