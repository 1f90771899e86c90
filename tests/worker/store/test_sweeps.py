"""The store's sweeps: the metrics they are ranked by are the trainer's own."""

from gan.evaluate import KEYS
from worker.store.sweeps import RANK_METRICS


def test_the_rank_metrics_are_the_metrics_the_best_checkpoint_is_chosen_by():
    assert set(RANK_METRICS) == {key for key in KEYS.values() if key is not None}
