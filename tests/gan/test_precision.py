import pytest
import torch

from gan.config import resolve
from gan.precision import cpu_flags, native_bf16, resolve_precision
from gan.state import TrainState


def test_explicit_precision_is_kept():
    for choice in ("fp32", "bf16"):
        assert resolve_precision(choice, torch.device("cpu")) == choice


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512_bf16\n\nprocessor\t: 1\n")
    assert {"avx2", "avx512_bf16"} <= cpu_flags(info)
    assert cpu_flags(tmp_path / "missing") == set()


def test_auto_is_fp32_without_native_bf16_and_the_run_says_so():
    cpu = torch.device("cpu")
    expected = "bf16" if native_bf16(cpu) else "fp32"
    if expected == "bf16":  # a CPU with native bf16: the probe decides
        pytest.skip("this CPU has native bf16; the timing probe decides there")
    assert resolve_precision("auto", cpu) == "fp32"
    cfg = resolve("stable", dataset="grid25", device="cpu")
    assert cfg.precision == "auto"
    s = TrainState.new(cfg, (2,), 0, cpu)
    assert s.precision == "fp32"
    assert not torch.is_autocast_enabled("cpu")
    with s.autocast:
        assert not torch.is_autocast_enabled("cpu")
