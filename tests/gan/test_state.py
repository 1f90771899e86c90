import copy

import pytest
import torch
from torch.testing import assert_close

from gan.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from gan.config import TrainConfig, resolve
from gan.sample import load_generator
from gan.state import TrainState
from gan.steps import StepStats, train_step
from tests.gan.test_steps import MNIST_SHAPE, real_batch_of, state_for

CPU = torch.device("cpu")


def tensors(snapshot: dict) -> dict:
    """A snapshot without the monitor's plain-data record (assert_close compares tensors)."""
    return {k: v for k, v in snapshot.items() if k != "monitor"}


def steps(cfg: TrainConfig, s: TrainState, n: int) -> None:
    stats = StepStats()
    for _ in range(n):
        stats = train_step(cfg, s, real_batch_of(cfg, s), stats)


def test_a_new_state_is_a_function_of_the_seed_and_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    _, a = state_for("stable", ema_decay=0.9)
    _, b = state_for("stable", ema_decay=0.9)
    assert torch.equal(torch.get_rng_state(), before)
    assert_close(tensors(a.snapshot()), tensors(b.snapshot()), rtol=0, atol=0)
    _, other = state_for("stable", ema_decay=0.9, seed=1)
    assert not torch.equal(other.rng.get_state(), a.rng.get_state())
    assert a.step == 0 and a.G_ema is not None and a.num_classes == 0


@pytest.mark.parametrize("preset", ["classic", "stable-conditional", "wgan-gp"])
def test_snapshot_and_restore_round_trip_exactly(preset):
    cfg, s = state_for(preset, ema_decay=0.9, d_steps=1)
    steps(cfg, s, 2)
    saved = copy.deepcopy(s.snapshot())
    steps(cfg, s, 2)
    assert s.step == 4
    s.restore(saved, cfg)
    assert s.step == 2
    assert_close(tensors(s.snapshot()), tensors(saved), rtol=0, atol=0)

    # and the future is the same: a fresh state restored from it takes the same next steps
    _, fresh = state_for(preset, ema_decay=0.9, d_steps=1)
    fresh.restore(copy.deepcopy(saved), cfg)  # a copy: restored optimizers share its tensors
    steps(cfg, s, 1)
    steps(cfg, fresh, 1)
    assert_close(tensors(fresh.snapshot()), tensors(s.snapshot()), rtol=0, atol=0)


def test_restore_keeps_the_monitor_and_its_lower_learning_rates():
    cfg, s = state_for("stable")
    saved = copy.deepcopy(s.snapshot())
    steps(cfg, s, 1)
    s.monitor.rolled_back(1, 0, float("nan"), float("nan"))
    s.restore(saved, cfg)
    assert s.monitor.rollbacks == 1  # the rollback stays on record
    assert s.opt_g.param_groups[0]["lr"] == cfg.lr_g / 2
    assert s.opt_d.param_groups[0]["lr"] == cfg.lr_d / 2


def test_restore_refuses_networks_of_another_layout():
    cfg, s = state_for("classic")
    _, wider = state_for("classic", latent_dim=50)
    with pytest.raises(RuntimeError, match="size mismatch"):
        s.restore(wider.snapshot(), cfg)


def test_a_checkpoint_reads_back_and_samples(tmp_path):
    cfg, s = state_for("stable-conditional", ema_decay=0.9)
    steps(cfg, s, 1)
    state = s.checkpoint(cfg, d_loss=0.5, g_loss=1.5)
    assert list(state)[:4] == ["config", "created_at", "data", "step"]
    assert state["data"] == {"shape": list(MNIST_SHAPE), "num_classes": 10}
    assert state["metrics"] == {"d_loss": 0.5, "g_loss": 1.5}
    save_checkpoint(state, tmp_path / "step-00000001.pt")
    loaded = load_checkpoint(tmp_path / "step-00000001.pt")
    assert loaded["format"] == FORMAT and loaded["step"] == 1
    G, loaded_cfg, step = load_generator(tmp_path / "step-00000001.pt")
    assert loaded_cfg == cfg and step == 1 and s.G_ema is not None
    assert_close(G.state_dict(), s.G_ema.state_dict(), rtol=0, atol=0)


def test_weights_finite_sees_a_non_finite_weight():
    _, s = state_for("classic")
    assert s.weights_finite()
    with torch.no_grad():
        next(s.D.parameters()).view(-1)[0] = float("inf")
    assert not s.weights_finite()


def test_a_compiled_state_runs_the_networks_through_torch_compile():
    cfg = resolve("classic", compile="default", device="cpu")
    s = TrainState.new(cfg, MNIST_SHAPE, 0, CPU)
    assert s.G_fwd is not s.G and s.D_fwd is not s.D
    penalised = resolve("classic", compile="default", r1_gamma=1.0, device="cpu")
    s = TrainState.new(penalised, MNIST_SHAPE, 0, CPU)
    assert s.G_fwd is not s.G and s.D_fwd is s.D  # second derivatives: D stays eager
