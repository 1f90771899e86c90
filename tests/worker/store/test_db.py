"""worker/store/db.py: one engine per job store URL, made and migrated once however many threads
ask for it first, and visible to the event loop without blocking once it is made."""

import threading

from sqlalchemy import text

from worker.store import db
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


def test_the_least_recently_asked_for_engines_are_let_go(tmp_path, monkeypatch):
    monkeypatch.setattr(db, "MAX_ENGINES", 2)
    a, b, c, d = (f"sqlite:///{tmp_path / name}.db" for name in "abcd")
    get_engine(a)
    get_engine(b)
    get_engine(c)  # a third: a, asked for least recently, is let go (its pool with it)
    assert made_engine(a) is None and made_engine(b) and made_engine(c)
    get_engine(b)  # b is now the most recent, so a fourth lets c go
    get_engine(d)
    assert made_engine(c) is None and made_engine(b) and made_engine(d)
