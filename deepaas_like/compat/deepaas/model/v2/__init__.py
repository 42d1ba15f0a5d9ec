"""``deepaas.model.v2``: the v2 model API (see ``deepaas/__init__.py``)."""
