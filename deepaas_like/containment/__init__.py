"""Containment of a worker process that loads uploaded files: Landlock, seccomp, rlimits,
namespaces (see sandbox.py)."""
