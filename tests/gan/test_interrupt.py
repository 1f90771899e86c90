import copy
import threading

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from gan.config import resolve
from gan.interrupt import StateCopy, StepGuard, StepInterrupted, interruptible
from gan.state import TrainState
from gan.steps import StepStats, train_step


def test_a_stop_interrupts_a_forward_and_a_backward_and_the_hooks_go_afterwards():
    net = nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2, inplace=True), nn.Linear(8, 1))
    x = torch.randn(3, 4)
    asked: list[str] = []
    stop = False

    def should_stop() -> bool:
        asked.append("asked")
        return stop

    with interruptible(should_stop):
        loss = net(x).sum()
        forward_checks = len(asked)
        assert forward_checks == 4  # each of the 3 layers, and the Sequential around them
        stop = True
        with pytest.raises(StepInterrupted):
            loss.backward()  # at the first module output the backward pass reaches
        with pytest.raises(StepInterrupted):
            net(x)
    assert all(p.grad is None for p in net[0].parameters())  # stopped before the first layer
    asked.clear()
    net(x).sum().backward()  # outside: nothing asks
    assert asked == []


def test_only_the_thread_that_asks_is_interrupted():
    net = nn.Linear(4, 1)
    outcomes: list[str] = []

    def run() -> None:
        net(torch.randn(2, 4)).sum().backward()
        outcomes.append("ran")

    with interruptible(lambda: True):
        other = threading.Thread(target=run)
        other.start()
        other.join()
        with pytest.raises(StepInterrupted):
            run()
    assert outcomes == ["ran"]  # the other thread's, untouched


def steps(cfg, s, n, stats=None):
    """``n`` steps of ``s`` on a fixed random batch."""
    real = torch.rand(cfg.batch_size, 1, 28, 28) * 2 - 1
    stats = stats or StepStats()
    for _ in range(n):
        stats = train_step(cfg, s, lambda k: (real, None), stats)
    return stats


def tensors_of(s: TrainState) -> dict:
    return copy.deepcopy({k: v for k, v in s.snapshot().items() if k != "monitor"})


def test_a_state_copy_restores_the_step_it_saved_and_is_used_up():
    cfg = resolve("stable", width=8, batch_size=8)
    s = TrainState.new(cfg, (1, 28, 28), 0, torch.device("cpu"))
    keep = StateCopy()
    keep.save(s)  # before the first step: no optimizer moments yet
    steps(cfg, s, 1)
    keep.save(s)  # the moments appeared: a new copy; copies into it from now on
    before = tensors_of(s)
    steps(cfg, s, 1)
    keep.save(s)
    at_2 = tensors_of(s)
    steps(cfg, s, 1)
    keep.restore(s, cfg)
    assert s.step == 2
    assert_close(tensors_of(s), at_2, rtol=0, atol=0)
    assert not torch.equal(at_2["opt_d"]["state"][0]["exp_avg"],
                           before["opt_d"]["state"][0]["exp_avg"])  # fmt: skip
    # s's optimizers now hold the copy's tensors: the next save must not copy into them
    keep.save(s)
    at_2_again = tensors_of(s)
    steps(cfg, s, 1)
    keep.restore(s, cfg)
    assert_close(tensors_of(s), at_2_again, rtol=0, atol=0)


def test_a_guarded_step_that_is_interrupted_leaves_the_state_as_it_was():
    cfg = resolve("stable", width=8, batch_size=8)
    s = TrainState.new(cfg, (1, 28, 28), 0, torch.device("cpu"))
    stats = steps(cfg, s, 1)
    before = tensors_of(s)
    d_bias = next(s.D.parameters())
    d_bias_before = d_bias.detach().clone()
    checks, d_updated = 0, False

    def should_stop() -> bool:  # late in the step: in G's update, once D's is done
        nonlocal checks, d_updated
        checks += 1
        d_updated = not torch.equal(d_bias, d_bias_before)
        return checks > 120  # of 153 in a step; D's update comes at the 104th

    guard = StepGuard(cfg, s, should_stop)  # its first step is guarded whatever it takes
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    with pytest.raises(StepInterrupted):
        guard.run(train_step, cfg, s, lambda k: (real, None), stats)
    assert checks == 121 and d_updated  # stopped at once, with half the step applied
    assert s.step == 1 and all(p.requires_grad for p in s.D.parameters())
    assert_close(tensors_of(s), before, rtol=0, atol=0)
