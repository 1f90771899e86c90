"""The service as real processes, for the tests and the benchmarks alike: ``harness.services``
starts `gan serve`, `gan worker` and a Redis of its own and makes PostgreSQL schemas;
``harness.load`` puts load on a running service (the scenarios of ``python -m bench.load`` and
of tests/reliability/test_load.py). Not part of the installed product: run from the checkout's
root, as pytest and ``python -m bench.…`` are."""
