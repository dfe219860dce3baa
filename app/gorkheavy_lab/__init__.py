"""The lab's stand-ins for parts that cannot run on the project's machines (product code, not tests).

``gorkheavy_lab.k3s`` is the K3s stand-in: an artifact builder and a single-file ``k3s`` that speaks K3s's
command line, join protocol and the Kubernetes API the roles use. It is not part of the orchestrator wheel.
"""
