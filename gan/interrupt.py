"""Stopping inside a step or an evaluation, moments after ``should_stop`` says so.

The trainer polls ``should_stop`` (a cheap flag read: another thread sets it) after every step,
which is soon enough while steps are short. A step or an evaluation that takes seconds is also
stopped from inside: within ``interruptible``, every module's forward (of G, D, G's EMA, the
judge: any ``nn.Module``) asks ``should_stop`` and raises ``StepInterrupted`` when it says so,
and so does the backward pass at each module output that carries a graph (a hook on that
tensor). Between two checks there is one layer's forward or backward.

A step stopped half-way may have updated D and not yet G: ``StepGuard`` undoes it. It runs a
step interruptibly when the previous one took at least ``SLOW_STEP_S`` (and the first step it
runs, whose time is not known yet), keeping a copy of the state made at the step's start
(``StateCopy``); an interrupted step restores it, so that the state is exactly that of the last
completed step, as if the stop had come between two steps. A shorter step runs bare (no hooks,
no copy: it costs nothing) and the stop is noticed at its end, within ``SLOW_STEP_S``.

The hooks are the global module hooks of torch (``register_module_forward_hook``), in force
only inside ``interruptible`` and only for the modules that its thread runs. Compiled networks
(``cfg.compile``) would trace them, so their steps run bare whatever they take (a compilation
too); evaluations run eager networks and are always interruptible. What no hook can cut short:
one layer's forward or backward (a tenth of the step at most in the configs measured,
RELIABILITY.md).
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import torch
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook

from gan.config import TrainConfig
from gan.state import TrainState

# Steps at least this long (seconds) run interruptibly, with a copy of the state to undo them;
# shorter ones run bare and a stop waits for their end. A worker's lease thread sets the stop
# flag within a second of a cancel, so that a job notices it within 2 s whatever its step time.
SLOW_STEP_S = 0.5

P = ParamSpec("P")
T = TypeVar("T")


class StepInterrupted(Exception):
    """``should_stop`` said to stop in the middle of a step or an evaluation."""


@contextlib.contextmanager
def interruptible(should_stop: Callable[[], bool]) -> Iterator[None]:
    """Within: raise ``StepInterrupted`` from the forward of any module that this thread runs,
    and from the backward through its output (wherever the backward runs: a GPU's autograd
    thread), once ``should_stop()`` is True. Another thread's networks are not its business."""
    mine = threading.get_ident()

    def check(*_: Any) -> None:
        if should_stop():
            raise StepInterrupted

    def after_forward(module: nn.Module, args: Any, output: Any) -> None:
        if threading.get_ident() != mine:
            return
        check()
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(check)  # runs when the backward pass reaches this output

    handle = register_module_forward_hook(after_forward)
    try:
        yield
    finally:
        handle.remove()


def _tensors(tree: Any) -> list[Tensor]:
    """The tensors of a nest of dicts, lists and tuples, in order."""
    if isinstance(tree, Tensor):
        return [tree]
    if isinstance(tree, dict):
        tree = list(tree.values())
    if isinstance(tree, list | tuple):
        return [t for item in tree for t in _tensors(item)]
    return []


class StateCopy:
    """A copy of a ``TrainState``'s snapshot, kept in tensors of its own: each ``save`` after
    the first copies into them (no allocation: a few milliseconds where a deep copy takes a
    hundred), unless the state's tensors changed shape (the optimizers' moments appear with the
    first step)."""

    def __init__(self) -> None:
        self._saved: dict[str, Any] | None = None
        self._into: list[Tensor] = []

    def save(self, s: TrainState) -> None:
        live = s.snapshot()
        tensors = _tensors(live)
        same = len(tensors) == len(self._into) and all(
            a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
            for a, b in zip(tensors, self._into, strict=True)
        )
        if self._saved is not None and same:
            torch._foreach_copy_(self._into, tensors)
            self._saved["step"] = live["step"]
        else:
            self._saved = copy.deepcopy(live)
            self._into = _tensors(self._saved)

    def restore(self, s: TrainState, cfg: TrainConfig) -> None:
        """Put the saved state back into ``s``. The copy is used up: ``s``'s optimizers now
        hold its tensors (``TrainState.restore``), so the next ``save`` makes a new one."""
        assert self._saved is not None, "nothing saved"
        s.restore(self._saved, cfg)
        self._saved, self._into = None, []


class StepGuard:
    """Runs the steps of a run so that a stop can interrupt the slow ones (see the module
    docstring); ``should_stop`` None: never."""

    def __init__(
        self, cfg: TrainConfig, s: TrainState, should_stop: Callable[[], bool] | None
    ) -> None:
        self.cfg, self.s, self.should_stop = cfg, s, should_stop
        self.enabled = should_stop is not None and cfg.compile == "none"
        self.last_s = float("inf")  # how long the previous step took: unknown yet
        self.copy = StateCopy()

    def run(self, step: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``step(*args, **kwargs)``: a step that changes ``s`` in place. StepInterrupted when
        a stop interrupted it; ``s`` is then as it was before the step."""
        start = time.perf_counter()
        if not self.enabled or self.last_s < SLOW_STEP_S:
            result = step(*args, **kwargs)
        else:
            assert self.should_stop is not None
            self.copy.save(self.s)
            try:
                with interruptible(self.should_stop):
                    result = step(*args, **kwargs)
            except StepInterrupted:
                self.copy.restore(self.s, self.cfg)
                raise
        self.last_s = time.perf_counter() - start
        return result
