"""``deepaas.model`` as DEEPaaS 2.x plugins import it (see ``deepaas/__init__.py``)."""
