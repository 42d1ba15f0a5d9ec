"""Typed application state (no module singletons)."""

from __future__ import annotations

from aiohttp import web

from ..auth.gate import Gate
from ..auth.principal import Principal
from ..database import Database
from ..jobs.manager import JobManager
from ..models import ModelSet
from ..service import DataPlane
from ..settings import Settings
from .metrics import Metrics
from .openapi import OpenApiDocument
from .origins import Origins
from .quietlog import RepeatedWarnings

SETTINGS = web.AppKey("settings", Settings)
MODELS = web.AppKey("models", ModelSet)
DATABASE = web.AppKey("database", Database)
JOBS = web.AppKey("jobs", JobManager)
PLANE = web.AppKey("plane", DataPlane)  # what every handler asks of the models (deepaas_like/service.py)
OPENAPI = web.AppKey("openapi", OpenApiDocument)
METRICS = web.AppKey("metrics", Metrics)
WARNINGS = web.AppKey("warnings", RepeatedWarnings)
GATE = web.AppKey("gate", Gate)
ORIGINS = web.AppKey("origins", Origins)
PRINCIPAL = web.RequestKey("principal", Principal)  # who made the request (set by the front door)
POLICIES = web.AppKey("policies", dict)  # aiohttp route -> its access Policy (api/routes.py)
