"""The job store: SQLAlchemy 2 tables of jobs and their metric time series, on SQLite or
PostgreSQL.

The API creates and reads jobs; the worker moves them through their states and records progress.
Both go through the functions of this package so that state changes happen in one place; the
functions that change a job mutate it inside the caller's ``session_scope``, which commits.

- ``states``: a job's states (``JobState``, ``STATES``, ``FINAL_STATES``, …);
- ``models``: the tables (``Job``, ``Sweep``, ``MetricPoint``, ``JobEvent``, ``ApiKey``,
  ``WorkerSlot``, ``Webhook``, ``WebhookDelivery``);
- ``db``: one engine per database URL, migrated on first use (``worker.migrate``), and
  ``session_scope``;
- ``jobs``: what clients do to a job: create, get, list, cancel, resume, delete;
- ``leases``: what workers do: claim a job, renew the lease, release it when done;
- ``events``: the log of each job's changes that clients follow;
- ``series``: progress reports, and the time series of them;
- ``keys``: API keys;
- ``workers``: the training slots' heartbeats, and who trains what;
- ``webhooks``: jobs' webhooks and the log of their deliveries;
- ``sweeps``: sweeps, the jobs one request made from a grid or list of points, ranked.

States (``states.STATES``)::

    queued ──claim──▶ running ──▶ succeeded | failed
      │                 │  └──cancel──▶ cancelling ──(worker stops)──▶ cancelled
      └──cancel──────────────────────────────────────────────────────▶ cancelled
    running ──▶ queued   its worker shut down, or was lost (lease expired), and requeued it
    cancelled | failed | succeeded ──resume──▶ queued

Callers import the tables, the states and ``db``'s functions by name
(``from worker.store.models import Job``, ``from worker.store.db import session_scope``), and the
other modules whole, calling through them (``jobs.cancel(job)``, ``leases.claim(…)``): a name
like ``cancel`` says what it does only next to its module's. This file imports nothing, so that
importing one module loads only what it needs, and ``worker.migrate`` can import ``models``
while ``db`` imports ``worker.migrate``.
"""
