import io

import torch

from gan.monitor import (
    COLLAPSE_DIVERSITY,
    SATURATED_D_LOSS,
    SATURATION_REPORTS,
    Monitor,
    TrainWarning,
)


def codes(monitor: Monitor) -> list[tuple[str, int]]:
    return [(w.code, w.step) for w in monitor.warnings]


def test_saturated_discriminator_is_flagged_once_from_the_step_it_started():
    monitor = Monitor(key="fid")
    monitor.observe_losses(10, "non_saturating", 0.5)
    for i in range(SATURATION_REPORTS - 1):
        monitor.observe_losses(20 + 10 * i, "non_saturating", SATURATED_D_LOSS / 10)
    assert codes(monitor) == []  # not yet a whole window
    for step in (60, 70, 80):
        monitor.observe_losses(step, "non_saturating", 0.0)
    assert codes(monitor) == [("vanishing_gradients", 20)]
    assert "lr_d" in monitor.warnings[0].message

    monitor.observe_losses(90, "non_saturating", 1.0)  # D recovered ...
    for step in range(100, 100 + 10 * SATURATION_REPORTS, 10):  # ... and saturated again
        monitor.observe_losses(step, "non_saturating", 0.0)
    assert codes(monitor) == [("vanishing_gradients", 20), ("vanishing_gradients", 100)]


def test_wasserstein_critics_never_saturate():
    monitor = Monitor(key="fid")
    for step in range(10 * SATURATION_REPORTS):
        monitor.observe_losses(step, "wgan_gp", -5.0)
    assert codes(monitor) == []


def test_best_evaluation_and_evaluations_since():
    monitor = Monitor(key="fid")
    assert monitor.observe_evaluation(100, {"fid": 50.0, "diversity": 1.0})
    assert not monitor.observe_evaluation(200, {"fid": 60.0, "diversity": 1.0})
    assert monitor.observe_evaluation(300, {"fid": 40.0, "diversity": 1.0})
    assert not monitor.observe_evaluation(400, {"fid": 45.0, "diversity": 1.0})
    assert (monitor.best_step, monitor.best, monitor.since_best) == (
        300, {"fid": 40.0, "diversity": 1.0}, 1
    )  # fmt: skip
    assert (monitor.metrics_step, monitor.metrics["fid"]) == (400, 45.0)
    assert not Monitor(key=None).observe_evaluation(1, {"diversity": 1.0})  # no key: no best


def test_collapse_is_flagged_by_diversity_or_by_lost_classes():
    monitor = Monitor(key="fid")
    monitor.observe_evaluation(100, {"fid": 9.0, "coverage": 10.0, "diversity": 0.9})
    monitor.observe_evaluation(200, {"fid": 9.0, "coverage": 8.0, "diversity": 0.9})
    assert codes(monitor) == []  # losing two classes is within noise
    monitor.observe_evaluation(300, {"fid": 9.0, "coverage": 6.0, "diversity": 0.9})
    monitor.observe_evaluation(400, {"fid": 9.0, "coverage": 5.0, "diversity": 0.9})
    assert codes(monitor) == [("mode_collapse", 300)]  # once per episode

    points = Monitor(key="mode_kl")
    points.observe_evaluation(50, {"mode_kl": 0.1, "modes": 25, "diversity": 1.0})
    points.observe_evaluation(
        60, {"mode_kl": 0.1, "modes": 25, "diversity": COLLAPSE_DIVERSITY / 2}
    )
    assert codes(points) == [("mode_collapse", 60)]

    conditional = Monitor(key="fid")  # a class-conditional G that draws one image per class
    conditional.observe_evaluation(
        70, {"fid": 300.0, "coverage": 10.0, "diversity": 0.85, "class_diversity": 0.26}
    )
    assert codes(conditional) == [("mode_collapse", 70)]
    assert "(0.26 within a class)" in conditional.warnings[0].message


def test_collapse_is_flagged_by_the_spread_over_known_modes_alone():
    # Stacked MNIST: varied-looking samples (diversity 0.9) that fall on a few of the 1000 modes.
    stacked = Monitor(key="kl")
    stacked.observe_evaluation(40, {"kl": 0.4, "modes": 900, "diversity": 0.9, "mode_spread": 0.9})
    assert codes(stacked) == []
    stacked.observe_evaluation(80, {"kl": 4.0, "modes": 900, "diversity": 0.9, "mode_spread": 0.1})
    assert codes(stacked) == [("mode_collapse", 80)]
    assert "spread over the modes 0.10" in stacked.warnings[0].message


def test_rollbacks_halve_the_learning_rates_and_say_so(caplog):
    monitor = Monitor(key=None)
    monitor.rolled_back(57, 50, float("nan"), 3.0)
    monitor.rolled_back(55, 50, float("inf"), float("nan"))
    assert (monitor.rollbacks, monitor.lr_scale) == (2, 0.25)
    assert codes(monitor) == [("diverged", 57), ("diverged", 55)]
    assert "rolled back to step 50" in monitor.warnings[-1].message
    logged = [r.getMessage() for r in caplog.records if r.name == "gan.monitor"]
    assert len(logged) == 2 and logged[0].startswith("diverged from step 57")  # once each


def test_the_record_survives_a_checkpoint_round_trip():
    monitor = Monitor(key="fid")
    monitor.observe_evaluation(100, {"fid": 50.0, "coverage": 10.0, "diversity": 1.0})
    monitor.rolled_back(120, 100, float("nan"), 1.0)
    buffer = io.BytesIO()
    torch.save({"monitor": monitor.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["monitor"]  # plain data only
    again = Monitor.from_state_dict(state)
    assert again == monitor and isinstance(again.warnings[0], TrainWarning)
