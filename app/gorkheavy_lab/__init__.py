"""The lab's stand-ins for parts that cannot run on the project's machines (product code, not tests).

- ``gorkheavy_lab.k3s`` is the K3s stand-in: an artifact builder and a single-file ``k3s`` that speaks K3s's
  command line, join protocol and the Kubernetes API the roles use.
- ``gorkheavy_lab.proxmox`` is the Proxmox VE 9.1 API stand-in (``python -m gorkheavy_lab.proxmox``; see its
  ``README.md``).
- ``gorkheavy_lab.ollama`` is the Ollama stand-in (``python -m gorkheavy_lab.ollama``), Ollama's native API.

None of them is part of the orchestrator wheel (``pyproject.toml`` packages only ``gorkheavy``). They are
imported from ``app/``: the tests have it on ``sys.path``; from a shell, run them with ``PYTHONPATH=app`` or
from ``app/``.
"""
