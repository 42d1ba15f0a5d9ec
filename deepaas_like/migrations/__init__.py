"""Alembic migrations of the server's store (SQLite or PostgreSQL), applied on open.

Run by :class:`deepaas_like.database.Database`, not by the ``alembic`` command: ``env.py``
takes the open connection from the configuration's attributes. Each step in
``versions/`` is written out in full (it must not change when :mod:`deepaas_like.tables`
does); the revision ids start with the step's number, which before Alembic was kept in
the ``meta`` table as ``schema_version``.
"""
