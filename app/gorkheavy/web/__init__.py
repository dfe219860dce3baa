"""The web page of ``gorkheavy serve``: chat, why an answer won, the models' health, the latencies.

``install`` adds the page at ``/`` (its assets under ``/ui/``) and the read-only JSON it needs under
``/v1/ui/`` (so the API's bearer token protects them like every other ``/v1`` route). See app/README.md.
"""

from gorkheavy.web.routes import Sources, install

__all__ = ["Sources", "install"]
