"""Imported by the fork server helper only (see :mod:`deepaas_like.engine.forking`): the
libraries the server names in its environment, imported before any worker is forked."""

from .forking import preload_from_environment

preload_from_environment()
