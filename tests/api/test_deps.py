"""The request's session: closing it never raises, even when the job store went away with its
transaction open (the close runs after the response is sent: an error there would make uvicorn
close the client's kept-alive connection)."""

import asyncio

import pytest
from sqlalchemy import text

from api.deps import get_session


def test_a_session_closes_quietly_when_the_store_went_away(settings, own_postgres):
    async def request() -> None:
        dependency = get_session(settings.model_copy(update={"database_url": own_postgres.url}))
        session = await anext(dependency)
        session.execute(text("SELECT 1"))  # a transaction is open …
        own_postgres.stop()  # … when the server goes away
        with pytest.raises(StopAsyncIteration):  # the teardown: session.close() …
            await anext(dependency)  # … fails to roll back, and says so in the log only

    asyncio.run(request())
