"""The engine: how a model's code runs. The executor contract and its process, thread and Ray
executors, the dispatcher in front of them, the worker process and the outcome of a call."""
