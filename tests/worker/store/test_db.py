"""worker/store/db.py: one engine per job store URL, made and migrated once however many threads
ask for it first, and visible to the event loop without blocking once it is made."""

import threading

from sqlalchemy import text

from worker.store.db import get_engine, made_engine


def test_threads_asking_at_once_share_one_engine(database_url):
    assert made_engine(database_url) is None  # nothing made yet: the caller must not block on it
    start = threading.Barrier(8)
    engines = []

    def ask() -> None:
        start.wait()
        engines.append(get_engine(database_url))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(engines) == 8
    assert all(engine is engines[0] for engine in engines)
    assert made_engine(database_url) is engines[0]
    with engines[0].connect() as connection:  # migrated: the tables are there
        assert connection.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 0
