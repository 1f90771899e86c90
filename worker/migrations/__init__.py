"""Alembic's migrations of the job store: ``env.py``, ``script.py.mako`` (the template of a new
revision) and ``versions/``. Run them through ``worker.migrate`` (or ``gan db …``)."""
