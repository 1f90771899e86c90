"""Training configuration and named presets.

This module imports nothing but the standard library, so the API can validate job specs and list
presets without importing torch, and ``gan`` runs where pydantic is not installed.

A job spec is a preset name plus field overrides: ``resolve("stable", max_steps=2000)``.
``BOUNDS`` holds the accepted range of every numeric field and ``CHOICES`` the accepted values of
every string field; the API builds its request schema from them and from each field's ``doc``,
and ``TrainConfig.__post_init__`` enforces them (and the rules between fields) for every caller,
so the limits live here once.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

Arch = Literal["mlp", "dcgan"]
Loss = Literal["minimax", "non_saturating", "hinge", "wgan", "wgan_gp", "lsgan", "rpgan"]
Conditional = Literal["none", "projection", "acgan"]
SpectralNorm = Literal["none", "d", "both"]
Augment = Literal["none", "translation", "cutout", "translation,cutout"]
Precision = Literal["auto", "fp32", "bf16"]
Compile = Literal["none", "default", "reduce-overhead"]
Device = Literal["auto", "cpu", "cuda", "mps"]


@dataclass(frozen=True)
class DatasetInfo:
    shape: tuple[int, ...]  # (C, H, W) of an image, or (D,) of a point
    num_classes: int  # labels run 0..num_classes−1
    description: str


# The datasets known by name. An uploaded dataset is named by its id instead (``UPLOAD_ID``).
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo((1, 28, 28), 10, "MNIST handwritten digits (IDX files)"),
    "fashion-mnist": DatasetInfo((1, 28, 28), 10, "Fashion-MNIST clothing (IDX files)"),
    "kmnist": DatasetInfo((1, 28, 28), 10, "Kuzushiji-MNIST cursive Japanese (IDX files)"),
    "cifar10": DatasetInfo((3, 32, 32), 10, "CIFAR-10 colour images (torchvision download)"),
    "stacked-mnist": DatasetInfo(
        (3, 28, 28), 1000, "three MNIST digits in three channels: 1000 modes"
    ),
    "ring8": DatasetInfo((2,), 8, "2D mixture of 8 Gaussians on a circle of radius 2"),
    "grid25": DatasetInfo((2,), 25, "2D mixture of 25 Gaussians on a 5x5 grid"),
}
UPLOAD_ID = re.compile(r"^ds-[0-9a-f]{32}$")  # ids that POST /datasets hands out


# Where a form shows a field, in this order: the essentials, then the other groups, folded.
GROUPS = (
    "Essentials",
    "Data",
    "Model",
    "Loss",
    "Stabilisers",
    "Optimisation",
    "Speed",
    "Quality and guards",
)


def _f(default: Any, doc: str, group: str) -> Any:
    """A config field with its documentation (shown in the API's schema and the CLI's help) and
    its group (one of ``GROUPS``: the API's schema gives it as ``x-group`` for forms)."""
    assert group in GROUPS, group
    return dataclasses.field(default=default, metadata={"doc": doc, "group": group})


@dataclass(frozen=True)
class TrainConfig:
    # --- data ---
    dataset: str = _f(
        "mnist", "dataset name (see DATASETS) or the id of an uploaded dataset", "Essentials"
    )
    image_size: int = _f(
        0, "images are resized to this square size; 0 keeps the dataset's own", "Data"
    )
    # --- model ---
    arch: Arch = _f("mlp", "mlp: textbook MLPs; dcgan: transposed-conv G, strided-conv D", "Model")
    latent_dim: int = _f(100, "size of z ~ N(0, I)", "Model")
    width: int = _f(
        64, "dcgan: channels of D's first and G's last hidden layer (mlp ignores it)", "Model"
    )
    depth: int = _f(
        0, "dcgan: extra 3x3 conv layers at each resolution of G and D (mlp: none)", "Model"
    )
    conditional: Conditional = _f(
        "none",
        "class conditioning: G gets the label (dcgan: conditional batch norm; mlp: an "
        "embedding concatenated to z); D uses projection or an AC head",
        "Model",
    )
    spectral_norm: SpectralNorm = _f(
        "none", "spectral normalisation of D's layers, or of G's too", "Model"
    )
    # --- loss ---
    loss: Loss = _f(
        "non_saturating", "adversarial loss, computed on D's logits (gan.losses)", "Loss"
    )
    gp_weight: float = _f(10.0, "wgan_gp: λ of the gradient penalty λ·E[(‖∇D(x̂)‖ − 1)²]", "Loss")
    clip_value: float = _f(0.01, "wgan: D's weights are clipped to [−c, c] after each step", "Loss")
    r1_gamma: float = _f(0.0, "R1 penalty γ/2·E‖∇D(x)‖² on real data; 0 = off", "Loss")
    r2_gamma: float = _f(0.0, "R2 penalty γ/2·E‖∇D(G(z))‖² on fakes; 0 = off", "Loss")
    reg_every: int = _f(1, "lazy regularisation: R1/R2/GP every k D steps, scaled by k", "Loss")
    acgan_weight: float = _f(1.0, "acgan: weight of the auxiliary classification loss", "Loss")
    # --- stabilisers ---
    label_smoothing: float = _f(0.0, "one-sided: D's target for real data is 1 − ε", "Stabilisers")
    instance_noise: float = _f(
        0.0, "σ of Gaussian noise added to D's inputs, annealed to 0", "Stabilisers"
    )
    instance_noise_steps: int = _f(
        2000, "steps over which the instance noise anneals to 0", "Stabilisers"
    )
    augment: Augment = _f(
        "none", "differentiable augmentation of real and fake alike", "Stabilisers"
    )
    ema_decay: float = _f(
        0.0, "decay of the generator's EMA used for sampling; 0 = off", "Stabilisers"
    )
    grad_clip: float = _f(0.0, "clip each network's gradient norm to this; 0 = off", "Stabilisers")
    pack: int = _f(
        1, "PacGAN: D judges this many samples at once, concatenated (1 = off)", "Stabilisers"
    )
    minibatch_std: int = _f(
        0,
        "minibatch standard deviation: D's head also sees the features' std over groups of "
        "this many samples (Karras et al. 2018); 0 = off",
        "Stabilisers",
    )
    # --- optimisation ---
    batch_size: int = _f(64, "real images (and fakes) per discriminator step", "Optimisation")
    d_steps: int = _f(1, "discriminator steps per generator step (n_critic)", "Optimisation")
    lr_g: float = _f(2e-4, "Adam learning rate of the generator", "Optimisation")
    lr_d: float = _f(
        2e-4, "Adam learning rate of the discriminator (TTUR: differ from lr_g)", "Optimisation"
    )
    beta1_g: float = _f(
        0.5, "Adam β1 of the generator (0.5 as in DCGAN; torch's default is 0.9)", "Optimisation"
    )
    beta2_g: float = _f(0.999, "Adam β2 of the generator", "Optimisation")
    beta1_d: float = _f(0.5, "Adam β1 of the discriminator", "Optimisation")
    beta2_d: float = _f(0.999, "Adam β2 of the discriminator", "Optimisation")
    # --- speed ---
    precision: Precision = _f(
        "auto",
        "bf16: autocast G and D to bfloat16; auto: bf16 where the device has native bf16 and a "
        "timing probe finds it faster, else fp32 (gan.precision; the job reports which)",
        "Speed",
    )
    compile: Compile = _f(
        "none", "torch.compile G and D; reduce-overhead uses CUDA graphs", "Speed"
    )
    device: Device = _f("auto", "auto picks cuda, then mps, then cpu", "Speed")
    # --- quality and guards ---
    eval_every: int = _f(
        500, "steps between quality evaluations on a fixed latent batch; 0 = off", "Essentials"
    )
    eval_samples: int = _f(2000, "samples drawn for each evaluation", "Quality and guards")
    early_stop_evals: int = _f(
        0, "stop after this many evaluations without a new best; 0 = off", "Quality and guards"
    )
    max_rollbacks: int = _f(
        3, "divergences (non-finite loss) recovered by rolling back, lr × ½", "Quality and guards"
    )
    # --- budget and bookkeeping ---
    max_steps: int = _f(2000, "training budget, in generator steps", "Essentials")
    seed: int = _f(
        0, "seeds weights, noise and data order: same spec + seed → same run", "Essentials"
    )
    log_every: int = _f(50, "steps between progress reports", "Essentials")
    checkpoint_every: int = _f(
        200, "steps between checkpoints (one is always written at the end)", "Essentials"
    )
    keep_checkpoints: int = _f(
        3, "newest checkpoints kept on disk; older ones are deleted", "Essentials"
    )

    def __post_init__(self) -> None:
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(name, f"must be a number, got {value!r}")
            if FIELD_TYPES[name] is int and not isinstance(value, int):
                raise ConfigError(name, f"must be a whole number, got {value!r}")
            if not math.isfinite(value) or not low <= value <= high:
                raise ConfigError(name, f"must be between {low:g} and {high:g}, got {value!r}")
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(
                    name, f"must be one of {list(choices)}, got {getattr(self, name)!r}"
                )
        self._check_combination()

    def _check_combination(self) -> None:
        """Rules between fields, each naming the field a user should change."""
        if not isinstance(self.dataset, str) or not (
            self.dataset in DATASETS or UPLOAD_ID.fullmatch(self.dataset)
        ):
            raise ConfigError(
                "dataset",
                f"must be one of {list(DATASETS)} or an uploaded dataset's id, "
                f"got {self.dataset!r}",
            )
        info = DATASETS.get(self.dataset)
        if info is not None:  # an upload's shape is checked when it is known
            check_data(self, info.shape, info.num_classes)
        if self.compile != "none" and self.arch != "mlp":
            raise ConfigError(
                "compile",
                "is available for arch 'mlp' only: torch.compile of the conv networks fails in "
                "convolution_backward (torch 2.11, measured; BENCHMARKS.md)",
            )
        if self.batch_size % self.pack:
            raise ConfigError("pack", f"must divide batch_size ({self.batch_size})")
        if self.pack > 1 and self.conditional != "none":
            raise ConfigError("pack", "packs unconditional samples only: set conditional 'none'")
        judged = self.batch_size // self.pack  # D's batch: packs of samples
        if self.minibatch_std == 1:
            raise ConfigError("minibatch_std", "must be 0 (off) or a group of 2 or more samples")
        if self.minibatch_std > 1 and judged % self.minibatch_std:
            raise ConfigError(
                "minibatch_std", f"must divide D's batch, batch_size / pack = {judged}"
            )
        if self.label_smoothing and self.loss not in ("minimax", "non_saturating", "lsgan"):
            smoothable = "the minimax, non_saturating and lsgan losses"
            raise ConfigError("label_smoothing", f"applies to {smoothable}, not {self.loss!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_data(cfg: TrainConfig, shape: tuple[int, ...], num_classes: int) -> None:
    """Rules between a config and the shape of its data, (C, H, W) or (D,) for points; raises
    ConfigError naming the field to change. Runs for named datasets when a config is made, and
    for uploads when the API queues the job and when the trainer loads the data."""
    if len(shape) == 1:  # points
        for name, plain in (("arch", "mlp"), ("augment", "none"), ("image_size", 0)):
            if getattr(cfg, name) != plain:
                raise ConfigError(name, f"must be {plain!r} for {cfg.dataset!r}: it holds points")
        return
    height, width = (cfg.image_size, cfg.image_size) if cfg.image_size else shape[-2:]
    if cfg.arch == "dcgan" and (height != width or not dcgan_supports(width)):
        raise ConfigError(
            "image_size" if cfg.image_size else "arch",
            f"dcgan needs square images whose size is a multiple of 4 from 8 to 64; "
            f"{cfg.dataset!r} gives {height}x{width} (set image_size to resize)",
        )
    if cfg.conditional != "none" and num_classes < 2:
        raise ConfigError(
            "conditional", f"needs labelled data with 2 or more classes; {cfg.dataset!r} has one"
        )


def dcgan_supports(size: int) -> bool:
    """The DCGAN networks upsample twice by 2 from size/4: any multiple of 4 from 8 to 64."""
    return size % 4 == 0 and 8 <= size <= 64


class ConfigError(ValueError):
    """A config field is out of range; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


# Accepted range (inclusive) of each numeric field.
BOUNDS: dict[str, tuple[float, float]] = {
    "image_size": (0, 128),
    "latent_dim": (1, 1024),
    "width": (4, 512),
    "depth": (0, 4),
    "gp_weight": (0.0, 1000.0),
    "clip_value": (1e-6, 10.0),
    "r1_gamma": (0.0, 1000.0),
    "r2_gamma": (0.0, 1000.0),
    "reg_every": (1, 64),
    "acgan_weight": (0.0, 100.0),
    "label_smoothing": (0.0, 0.5),
    "instance_noise": (0.0, 10.0),
    "instance_noise_steps": (1, 10_000_000),
    "ema_decay": (0.0, 0.99999),
    "grad_clip": (0.0, 1e6),
    "pack": (1, 16),
    "minibatch_std": (0, 256),
    "batch_size": (1, 8192),
    "d_steps": (1, 100),
    "lr_g": (1e-7, 1.0),
    "lr_d": (1e-7, 1.0),
    "beta1_g": (0.0, 0.999),
    "beta2_g": (0.0, 0.9999),
    "beta1_d": (0.0, 0.999),
    "beta2_d": (0.0, 0.9999),
    "eval_every": (0, 10_000_000),
    "eval_samples": (100, 50_000),
    "early_stop_evals": (0, 10_000),
    "max_rollbacks": (0, 100),
    "max_steps": (1, 10_000_000),
    "seed": (0, 2**31 - 1),
    "log_every": (1, 100_000),
    "checkpoint_every": (1, 10_000_000),
    "keep_checkpoints": (1, 1000),
}

# Accepted values of each string field with a fixed set of values (``dataset`` is checked apart:
# it also takes the ids of uploaded datasets).
CHOICES: dict[str, tuple[str, ...]] = {
    "arch": get_args(Arch),
    "conditional": get_args(Conditional),
    "spectral_norm": get_args(SpectralNorm),
    "loss": get_args(Loss),
    "augment": get_args(Augment),
    "precision": get_args(Precision),
    "compile": get_args(Compile),
    "device": get_args(Device),
}

# Python type of each field (int or float for the numeric ones, str for the rest).
FIELD_TYPES: dict[str, type] = {
    f.name: {"int": int, "float": float}.get(str(f.type), str)
    for f in dataclasses.fields(TrainConfig)
}
# Documentation of each field.
FIELD_DOCS: dict[str, str] = {f.name: f.metadata["doc"] for f in dataclasses.fields(TrainConfig)}
# Form group of each field.
FIELD_GROUPS: dict[str, str] = {
    f.name: f.metadata["group"] for f in dataclasses.fields(TrainConfig)
}


DataKind = Literal["images", "points"]
DATA_KINDS: tuple[DataKind, ...] = get_args(DataKind)
# What a preset shows for each kind of data (GET /presets): a dataset of that kind.
KIND_EXAMPLES: dict[DataKind, str] = {"images": "mnist", "points": "grid25"}
# Defaults every preset takes for point data: the DCGAN cannot take points.
POINT_DEFAULTS: dict[str, Any] = {"arch": "mlp"}


def data_kind(dataset: object) -> DataKind:
    """The kind of data ``dataset`` names: "points" for a named dataset of points (ring8,
    grid25), else "images" (uploads are images)."""
    info = DATASETS.get(dataset) if isinstance(dataset, str) else None
    return "points" if info is not None and len(info.shape) == 1 else "images"


@dataclass(frozen=True)
class Preset:
    description: str
    config: TrainConfig  # for images (its dataset is MNIST)
    points: dict[str, Any] = dataclasses.field(default_factory=dict)  # what differs for points

    def defaults(self, kind: DataKind) -> dict[str, Any]:
        """The preset's fields for data of ``kind``, before a job spec's overrides."""
        fields = self.config.to_dict()
        return {**fields, **POINT_DEFAULTS, **self.points} if kind == "points" else fields


PRESETS: dict[str, Preset] = {
    "classic": Preset(
        "The textbook MNIST GAN as the widely copied code trains it: MLPs, BCE on logits "
        "(D: minimax; G: −log D(G(z))), Adam 2e-4 with β1 = 0.5, batch 64. Kept as it is so "
        "users can compare; with beta1_g = beta1_d = 0.9 it collapses.",
        TrainConfig(),
    ),
    "dcgan": Preset(
        "Radford et al. 2016 scaled to 28x28: transposed-conv G with batch norm, strided-conv "
        "D, non-saturating loss, Adam 2e-4, β = (0.5, 0.999).",
        TrainConfig(arch="dcgan"),
    ),
    "wgan-gp": Preset(
        "Gulrajani et al. 2017: Wasserstein loss with gradient penalty λ = 10, 5 critic steps "
        "per generator step, Adam 1e-4, β = (0, 0.9).",
        TrainConfig(
            arch="dcgan",
            loss="wgan_gp",
            d_steps=5,
            lr_g=1e-4,
            lr_d=1e-4,
            beta1_g=0.0,
            beta2_g=0.9,
            beta1_d=0.0,
            beta2_d=0.9,
        ),
    ),
    "sngan-hinge": Preset(
        "Miyato et al. 2018: spectral normalisation in D, hinge loss, Adam 2e-4, β = (0, 0.9), "
        "with TTUR (D at 4e-4) instead of extra critic steps.",
        TrainConfig(
            arch="dcgan",
            loss="hinge",
            spectral_norm="d",
            lr_g=2e-4,
            lr_d=4e-4,
            beta1_g=0.0,
            beta2_g=0.9,
            beta1_d=0.0,
            beta2_d=0.9,
        ),
    ),
}


def _stable(**overrides: Any) -> TrainConfig:
    # The recommended default for MNIST-like data, chosen by measurement (BENCHMARKS.md): SNGAN's
    # hinge recipe with TTUR had the best FID of the candidates at 1000-3000 steps; translation
    # augmentation slowed it down (10k images are not yet overfitted at these budgets); sampling
    # from an EMA of G with decay 0.99 beat both the raw G and decay 0.999. One extra 3x3 conv
    # layer per resolution (depth 1) was the largest gain of all: FID 13 instead of 78 at 2000
    # steps; within 3x the real-vs-real baseline from 3000-6000 steps on, depending on the split
    # of the reals, and on all three splits measured at 8000 (about 17 minutes on a 2-core CPU
    # with bf16), where depth 0 was still at 25.
    sngan = PRESETS["sngan-hinge"].config
    return dataclasses.replace(
        sngan, depth=1, ema_decay=0.99, max_steps=8000, checkpoint_every=500, **overrides
    )


# What `stable` changes for 2D points, chosen by measurement (BENCHMARKS.md, "Mode collapse under
# the published protocols"), the rest of the recipe being the image one on the point MLPs:
# - an 8-dimensional latent instead of 100: of the recipes swept on the grid (loss, spectral
#   norm, R1/R2, β, learning rates, lr decay, EMA, input standardisation, batch, G width and
#   batch norm) the only change that sharpened the samples faster while keeping every mode;
# - a budget of 24,000 steps, batch 256 and an EMA decay of 0.999: the points' precision (the
#   share of samples within 3σ of a mode) is what 8,000 steps of batch 64 left short (grid 16%,
#   ring 73%, seed 0); it keeps climbing with the budget, and the larger batch and the slower
#   EMA climb faster (grid 88%, ring 92% at 24,000 steps, 5 seeds; 11-12 minutes of one thread).
STABLE_POINTS: dict[str, Any] = {
    "latent_dim": 8,
    "max_steps": 24_000,
    "batch_size": 256,
    "ema_decay": 0.999,
}

PRESETS["stable"] = Preset(
    "The recommended default for MNIST-like data, chosen by measurement (BENCHMARKS.md): "
    "DCGAN with one extra 3x3 conv layer per resolution, spectral norm in D, hinge loss, TTUR "
    "(G 2e-4, D 4e-4, β = (0, 0.9)), and an exponential moving average (decay 0.99) of G's "
    "weights for sampling; 8000 steps. On 2D points (ring8, grid25) the same recipe on the "
    "point MLPs with an 8-dimensional latent, batch 256, EMA decay 0.999 and 24,000 steps "
    "(BENCHMARKS.md: mode collapse under the published protocols).",
    _stable(),
    points=STABLE_POINTS,
)
PRESETS["stable-conditional"] = Preset(
    "`stable` with class conditioning: conditional batch norm in G (a per-class gain and bias "
    "after each batch norm) and a projection discriminator; samples can be asked for by class.",
    _stable(conditional="projection"),
    points=STABLE_POINTS,
)


def resolve(preset: str, **overrides: Any) -> TrainConfig:
    """The preset's config for the kind of data ``overrides`` names (``data_kind`` of its
    dataset, else the preset's), with ``overrides`` applied; raises ConfigError naming a bad
    field. A field the spec sets always wins over the preset's default for the data."""
    if preset not in PRESETS:
        raise ConfigError("preset", f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    chosen = PRESETS[preset]
    kind = data_kind(overrides.get("dataset", chosen.config.dataset))
    return from_dict({**chosen.defaults(kind), **overrides})


def resolve_for_kinds(preset: str) -> dict[DataKind, TrainConfig]:
    """What ``preset`` resolves to for each kind of data, on ``KIND_EXAMPLES``' datasets."""
    return {kind: resolve(preset, dataset=KIND_EXAMPLES[kind]) for kind in DATA_KINDS}


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a config saved with ``to_dict`` (in a job row or a checkpoint)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(unknown[0], "unknown field")
    return TrainConfig(**values)
