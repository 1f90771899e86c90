import contextvars
import os
import threading

import pytest

from tests.worker.test_settings import nice_of_this_thread
from worker.settings import Settings

NICE = pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no per-thread nice here")
REQUEST = contextvars.ContextVar("request", default="none")


@NICE
def test_generation_runs_in_threads_below_the_api_s_priority():
    from api import sampling

    settings = Settings(max_samplings=3)
    api_nice = nice_of_this_thread()
    nice, thread = sampling.generating(
        settings, lambda: (nice_of_this_thread(), threading.get_native_id())
    )
    assert thread != threading.get_native_id()
    assert nice == min(19, api_nice + sampling.GENERATION_NICE)
    assert nice_of_this_thread() == api_nice  # the caller's own priority is untouched


def test_generation_sees_the_request_s_context_and_raises_its_errors():
    from api import sampling

    settings = Settings(max_samplings=3)
    REQUEST.set("job-1")
    assert sampling.generating(settings, REQUEST.get) == "job-1"  # the log context goes along

    def fails() -> None:
        raise ValueError("label must be a class")

    with pytest.raises(ValueError, match="label must be a class"):
        sampling.generating(settings, fails)
