"""The revisions, ``NNNN_<slug>.py``, oldest first; ``gan db revision -m "..."`` writes the next."""
