"""The demo model that `make run` serves (see deepaas_like_demo.api)."""
