import dataclasses
import math
from typing import Any

import pytest

from gan.config import (
    BOUNDS,
    CHOICES,
    FIELD_DOCS,
    FIELD_GROUPS,
    GROUPS,
    PRESETS,
    ConfigError,
    TrainConfig,
    check_data,
    from_dict,
    resolve,
    resolve_for_kinds,
)


def test_classic_preset_is_the_textbook_gan():
    cfg = PRESETS["classic"].config
    assert (cfg.arch, cfg.latent_dim, cfg.batch_size) == ("mlp", 100, 64)
    assert cfg.loss == "non_saturating"  # BCE(D(G(z)), 1), as the textbook code trains G
    assert cfg.lr_g == cfg.lr_d == 2e-4 and cfg.beta1_g == cfg.beta1_d == 0.5
    assert (cfg.ema_decay, cfg.spectral_norm, cfg.augment) == (0.0, "none", "none")


def test_named_presets_select_their_techniques():
    wgan_gp, sngan = PRESETS["wgan-gp"].config, PRESETS["sngan-hinge"].config
    assert (wgan_gp.loss, wgan_gp.gp_weight, wgan_gp.d_steps) == ("wgan_gp", 10.0, 5)
    assert (sngan.loss, sngan.spectral_norm) == ("hinge", "d")
    stable, conditional = PRESETS["stable"].config, PRESETS["stable-conditional"].config
    assert stable.ema_decay > 0 and conditional.conditional == "projection"
    assert all(preset.description for preset in PRESETS.values())


def test_every_field_is_documented_and_constrained():
    for name in TrainConfig.__dataclass_fields__:
        assert FIELD_DOCS[name], name
        assert name in BOUNDS or name in CHOICES or name == "dataset", name


def test_every_field_has_a_form_group():
    """So a form shows each field where it belongs (none falls into an "Other" group)."""
    for name in TrainConfig.__dataclass_fields__:
        assert FIELD_GROUPS[name] in GROUPS, name
    assert set(FIELD_GROUPS.values()) == set(GROUPS)  # and no group is empty
    assert FIELD_GROUPS["depth"] == "Model"


def test_resolve_applies_overrides_and_round_trips():
    cfg = resolve("classic", max_steps=123, seed=7)
    assert (cfg.max_steps, cfg.seed) == (123, 7)
    assert from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_steps": -1}, "max_steps"),
        ({"batch_size": 10**6}, "batch_size"),
        ({"lr_g": math.nan}, "lr_g"),
        ({"lr_d": math.inf}, "lr_d"),
        ({"latent_dim": True}, "latent_dim"),
        ({"loss": "softmax"}, "loss"),
        ({"d_steps": 1.5}, "d_steps"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"dataset": "ds-" + "a" * 32 + "\n"}, "dataset"),
        ({"dataset": "ring8", "arch": "dcgan"}, "arch"),
        ({"dataset": "grid25", "augment": "translation"}, "augment"),
        ({"arch": "dcgan", "image_size": 30}, "image_size"),
        ({"arch": "dcgan", "dataset": "cifar10", "image_size": 64}, None),
        ({"loss": "wgan", "label_smoothing": 0.1}, "label_smoothing"),
        ({"arch": "dcgan", "compile": "default"}, "compile"),
        ({"compile": "reduce-overhead", "precision": "bf16"}, None),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_values_name_the_field(overrides, field):
    if field is None:  # a control: a valid combination of the same fields
        resolve("classic", **overrides)
        return
    with pytest.raises(ConfigError) as info:
        resolve("classic", **overrides)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")


def test_unknown_preset_is_named():
    with pytest.raises(ConfigError) as info:
        resolve("nope")
    assert info.value.field == "preset"


def test_every_bound_belongs_to_a_numeric_field():
    fields = TrainConfig.__dataclass_fields__
    for name, (low, high) in BOUNDS.items():
        assert name in fields and low < high
        default = getattr(TrainConfig(), name)
        assert low <= default <= high


def test_uploaded_data_is_checked_against_the_config():
    cfg = resolve("stable", dataset="ds-" + "0" * 32)
    check_data(cfg, (3, 32, 32), 4)
    with pytest.raises(ConfigError) as info:
        check_data(cfg, (1, 30, 30), 4)
    assert info.value.field == "arch"
    with pytest.raises(ConfigError) as info:
        check_data(resolve("stable-conditional", dataset=cfg.dataset), (1, 28, 28), 1)
    assert info.value.field == "conditional"


def test_stable_follows_the_kind_of_data():
    images, points = resolve("stable"), resolve("stable", dataset="grid25")
    assert images.arch == "dcgan" and points.arch == "mlp"
    differs = {k: v for k, v in points.to_dict().items() if images.to_dict()[k] != v}
    assert differs == {"dataset": "grid25", "arch": "mlp", "latent_dim": 8, "max_steps": 24_000,
                       "batch_size": 256, "ema_decay": 0.999}  # STABLE_POINTS  # fmt: skip
    assert resolve("stable-conditional", dataset="grid25").latent_dim == 8
    assert resolve("classic", dataset="grid25").latent_dim == 100  # only stable's points change
    assert resolve("stable", dataset="ring8") == dataclasses.replace(points, dataset="ring8")
    for name in PRESETS:  # every preset takes every dataset with nothing else set
        for dataset in ("mnist", "stacked-mnist", "ring8", "grid25"):
            assert resolve(name, dataset=dataset).dataset == dataset
    # the spec's own fields win over the defaults for its data
    assert resolve("stable", dataset="grid25", pack=1, loss="hinge").loss == "hinge"
    with pytest.raises(ConfigError, match="arch"):
        resolve("stable", dataset="grid25", arch="dcgan")
    kinds = resolve_for_kinds("stable")
    assert kinds == {"images": images, "points": points}


def test_pack_and_minibatch_std_must_fit_the_batch():
    assert TrainConfig(pack=4, batch_size=64, minibatch_std=4).pack == 4
    bad: list[tuple[dict[str, Any], str]] = [
        ({"pack": 3, "batch_size": 64}, "pack"),
        ({"pack": 2, "conditional": "projection"}, "pack"),
        ({"minibatch_std": 1}, "minibatch_std"),
        ({"pack": 4, "batch_size": 64, "minibatch_std": 32}, "minibatch_std"),  # 16 packs
    ]
    for overrides, field in bad:
        with pytest.raises(ConfigError) as e:
            TrainConfig(**overrides)
        assert e.value.field == field
