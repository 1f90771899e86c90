import argparse
import math
import shutil

import torch
from torch.testing import assert_close

from harness.modes import data_floor, fid_report, floor_figures, mean_se, report


def test_floor_figures_on_constructed_modes():
    # 2000 triples, each of the 1000 modes twice; the judge misreads one copy of modes 1..10
    # as mode 0: mode 0 holds 12, modes 1..10 one each, the other 989 two each.
    true = torch.arange(1000).repeat(2)
    read = true.clone()
    read[1:11] = 0
    figures = floor_figures(read, true)
    expected_kl = 12 / 2000 * math.log(12 / 2) + 10 / 2000 * math.log(1 / 2)  # Σ p log(1000 p)
    assert_close(figures["kl"], expected_kl, rtol=0, atol=1e-12)
    assert_close(figures["kl_true"], 0.0, rtol=0, atol=1e-12)
    assert_close(figures["accuracy"], 1990 / 2000)
    assert figures["modes"] == 1000
    # Of the 6000 digits read, 600 of each, the misread 001..009 and 010 (each read as 000) turn
    # one 1..9 each, and another 1, into 0s: 610 0s, 598 1s, 599 of each other digit.
    assert figures["digit_shares"] == [10.17, 9.97] + [9.98] * 8
    zeros = torch.zeros(26_000, dtype=torch.long)
    collapsed = floor_figures(zeros, zeros)
    assert collapsed["modes"] == 1
    assert collapsed["digit_shares"] == [100.0] + [0.0] * 9
    assert_close(collapsed["kl"], math.log(1000), rtol=0, atol=1e-9)
    assert_close(collapsed["digits_kl"], 3 * math.log(10), rtol=0, atol=1e-9)  # all of it


def test_mean_se():
    # mean 2, sample standard deviation 1, standard error 1/√3.
    assert mean_se([1.0, 2.0, 3.0]) == f"2 ± {1 / math.sqrt(3):.2g}"
    assert mean_se([1000.0, 999.0]) == "999.5 ± 0.5"  # modes of 1000 in full
    assert mean_se([1.0, math.inf]) == "inf"


def test_data_floor_reads_the_data_with_the_judge(tmp_path, mnist_dir, quick_mnist_judge):
    shutil.copy(quick_mnist_judge, tmp_path / "judge-mnist.pt")  # judge_for finds it cached
    floor = data_floor(0, mnist_dir, tmp_path, n=2000)
    assert floor["accuracy"] > 0.3  # the quick judge reads most digits right
    # 2000 draws of 1000 modes hit about 1000·(1 − e⁻²) ≈ 865; misreads can only lower it.
    assert 700 < floor["modes"] <= 880
    assert floor["kl_true"] > 0.2  # ≈ (K − 1)/2N ≈ 0.25 from sampling alone
    again = data_floor(0, mnist_dir, tmp_path, n=2000)  # the same draw: the same figures
    assert {**again, "wall_s": 0} == {**floor, "wall_s": 0}
    assert data_floor(1, mnist_dir, tmp_path, n=2000)["kl_true"] != floor["kl_true"]


def test_reports_show_the_data_row_and_the_fid_table():
    rows = [{"seed": s, "steps": 100, "wall_s": 10.0, "modes": 990 + s, "kl": 0.05,
             "digits_kl": 0.02 + 0.01 * s} for s in (0, 1)]  # fmt: skip
    floor = [{"seed": s, "modes": 1000, "kl": 0.022, "accuracy": 0.975, "kl_true": 0.023,
              "digits_kl": 0.005} for s in (0, 1)]  # fmt: skip
    table = report("stacked-mnist", rows, "stable", floor)
    assert "| data: 26,000 triples of the 10k split (2 draws) | 1000 ± 0 | 0.022 ± 0 |  |" in table
    assert "97.5 ± 0% of the data's triples" in table
    assert "true modes' KL 0.023 ± 0)" in table
    assert "digits' own frequencies account for 0.025 ± 0.005; the data's 0.005 ± 0)" in table
    assert "every seed meets the target (1000, None, 0.03): False" in table
    fids = [{"seed": s, "steps": 100, "wall_s": 5.0, "fid": 10.0 + s, "fid_baseline": 1.5}
            for s in (0, 1)]  # fmt: skip
    assert "| **stable** (2 seeds, 100 steps) | 10.5 ± 0.5 | 1.5 ± 0 | 5 |" in fid_report(
        fids, "stable"
    )


def test_score_on_mnist_trains_the_judge_when_none_is_cached(tmp_path, mnist_dir, monkeypatch):
    """The FID bench makes its evaluator outside inference mode: with no judge cached it trains
    one (in inference mode that raised "element 0 of tensors does not require grad")."""
    import gan.judge
    from gan.config import resolve
    from gan.data import load_dataset
    from gan.train import train
    from harness.modes import score

    monkeypatch.setattr(gan.judge, "JUDGE_STEPS", 5)  # a judge of a few steps: this is plumbing
    cfg = resolve("classic", max_steps=2, eval_every=0, log_every=2, checkpoint_every=2)
    result = train(cfg, load_dataset("mnist", mnist_dir, download=False), tmp_path / "run")
    figures = score("mnist", result.checkpoint, 0, mnist_dir, tmp_path / "cache")
    assert (tmp_path / "cache" / "judge-mnist.pt").is_file()
    assert math.isfinite(figures["fid"]) and figures["fid"] > figures["fid_baseline"] > 0


def test_data_floor_trains_the_judge_when_none_is_cached(tmp_path, mnist_dir, monkeypatch):
    """As score's: the judge is trained outside inference mode (inside, it raised "element 0 of
    tensors does not require grad" on the first `bench.modes --bench stacked-mnist` run)."""
    import gan.judge

    monkeypatch.setattr(gan.judge, "JUDGE_STEPS", 5)  # a judge of a few steps: this is plumbing
    floor = data_floor(0, mnist_dir, tmp_path / "cache", n=100)
    assert (tmp_path / "cache" / "judge-mnist.pt").is_file()
    assert 0 < floor["modes"] <= 100 and 0 <= floor["accuracy"] <= 1


def test_scores_at_several_budgets_are_those_of_separate_runs(tmp_path, mnist_dir):
    """``--at 3,6`` resumes the seed's run from its 3-step checkpoint to score it at 6: the
    figures at 6 are those of a run trained 6 steps straight (and differ from those at 3)."""
    from harness.modes import run_one

    args = argparse.Namespace(
        preset="stable", overrides={"batch_size": 16}, steps=0, data=mnist_dir, cache=tmp_path
    )
    resumed = run_one("grid25", 0, argparse.Namespace(**vars(args), at=[3, 6]))
    straight = run_one("grid25", 0, argparse.Namespace(**vars(args), at=[6]))
    assert [r["steps"] for r in resumed] == [3, 6] and straight[0]["steps"] == 6
    figures = ("modes", "hq", "kl")
    assert {k: resumed[1][k] for k in figures} == {k: straight[0][k] for k in figures}
    assert {k: resumed[0][k] for k in figures} != {k: resumed[1][k] for k in figures}
