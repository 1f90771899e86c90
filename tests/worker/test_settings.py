import os
import threading

import pytest

from worker.settings import Settings, lower_priority


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no per-thread nice here")
def test_lower_priority_lowers_the_thread_and_what_it_starts_after():
    seen: dict[str, int] = {}

    def lowered() -> None:  # in a thread of its own: the test's thread keeps its priority
        before = nice_of_this_thread()
        lower_priority(3)
        seen["lowered"] = nice_of_this_thread() - before
        child = threading.Thread(target=lambda: seen.update(child=nice_of_this_thread() - before))
        child.start()
        child.join()
        lower_priority(30)
        seen["at_most_19"] = nice_of_this_thread()

    outside = nice_of_this_thread()
    thread = threading.Thread(target=lowered)
    thread.start()
    thread.join()
    assert seen == {"lowered": 3, "child": 3, "at_most_19": 19}
    assert nice_of_this_thread() == outside


def test_worker_nice_is_a_nice_level(monkeypatch):
    monkeypatch.delenv("GAN_WORKER_NICE")  # tests/conftest.py sets 0 for the tests' workers
    assert Settings().worker_nice == 10
    assert Settings(worker_nice=0).worker_nice == 0
    with pytest.raises(ValueError, match="worker_nice"):
        Settings(worker_nice=20)
