import math

import pytest

from gan.config import BOUNDS, PRESETS, ConfigError, TrainConfig, from_dict, resolve


def test_classic_preset_is_the_textbook_gan():
    cfg = PRESETS["classic"]
    assert (cfg.arch, cfg.loss, cfg.latent_dim, cfg.batch_size) == ("mlp", "minimax", 100, 64)
    assert cfg.lr_g == cfg.lr_d == 2e-4


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
        ({"loss": "hinge"}, "loss"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_values_name_the_field(overrides, field):
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
