"""Stand-ins for systems this machine cannot run (Proxmox VE API, Ollama), speaking their real wire protocols."""
