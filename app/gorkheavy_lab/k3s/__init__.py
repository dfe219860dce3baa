"""A K3s stand-in: ``k3s server`` / ``k3s agent`` with a real CA, K3s's token and join protocol, and a
registry-shaped Kubernetes API. See README.md beside this file for what it models and what it does not."""
