"""The in-process API server and kubelet every streaming test talks to (tests/unit/k3s_stream/harness.py)."""

from tests.unit.k3s_stream.harness import lab, started_in_the_background

__all__ = ["lab", "started_in_the_background"]
