"""Stand-ins for systems this machine cannot run (Proxmox VE API, Ollama).

Each speaks the real wire protocol of the system it stands in for.
"""
