"""Knowing a model: model tests (checks) and feature impact."""
