"""Helpers of the suite (not tests): servers, PostgreSQL, a browser, model files."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent  # tests/
ROOT = TESTS.parent  # the project
