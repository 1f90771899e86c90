"""worker.store.keys: API keys, stored hashed, on SQLite and the real PostgreSQL."""

from worker.store import keys
from worker.store.db import session_scope


def test_api_keys_are_stored_hashed(database_url):
    with session_scope(database_url) as session:
        assert not keys.has_stored_keys(session)
        key, secret = keys.create_api_key(session, "ci")
    with session_scope(database_url) as session:
        assert keys.has_stored_keys(session)
        stored = keys.list_api_keys(session)
        assert [k.name for k in stored] == ["ci"] and secret not in stored[0].key_hash
        assert keys.stored_key_owner(session, keys.hash_key(secret)) == key.id
        assert key.id == keys.key_owner(keys.hash_key(secret))
        assert keys.stored_key_owner(session, keys.hash_key(secret + "x")) is None
        assert keys.revoke_api_key(session, key.id)
        assert not keys.has_stored_keys(session)
