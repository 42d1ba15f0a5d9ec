"""Durable jobs: trainings and asynchronous predictions, kept in SQLite."""
