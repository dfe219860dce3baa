"""The lab: the whole ``site.yml`` on this machine, from a Proxmox VE stand-in to ``gorkheavy chat``.

``python -m gorkheavy_lab.lab up|down|chat|status|site`` (README.md beside this file). ``up`` creates what
the lab needs and nothing else: the state directory ``.lab/`` of the checkout (SSH key, generated secrets in
an ansible-vault file, the K3s air-gap release, the Proxmox stand-in's state, CA and log), the podman network
``gorkheavy-lab`` and the Proxmox VE stand-in as a local service on 127.0.0.1, whose VMs are systemd test
hosts ``gorkheavy-lab-*`` on that network; then it runs ``ansible-playbook site.yml -i inventory/lab``.
``down`` removes exactly those things again.
"""

from gorkheavy_lab.lab.driver import Lab, LabError, LabSettings

__all__ = ["Lab", "LabError", "LabSettings"]
