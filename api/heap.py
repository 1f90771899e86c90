"""The API process's heap: what the garbage collector need not walk."""

from __future__ import annotations

import gc


def freeze_long_lived() -> None:
    """Move every object that exists now out of the cyclic garbage collector's sight
    (``gc.freeze``): call it once the modules that live as long as the process are imported.

    A full collection walks every tracked object, and the API's imports alone are 145,000 of
    them (305,000 once torch is loaded for sampling): 150 to 300 ms of a quiet core, holding the
    GIL, and up to 1.2 s during a burst of requests on two busy cores, while every request
    waits (RELIABILITY.md, "Hostile clients"). A burst's own garbage makes such collections
    come. Frozen objects are still freed when their last reference goes; only cycles among them
    are kept, and imports make few."""
    gc.freeze()
