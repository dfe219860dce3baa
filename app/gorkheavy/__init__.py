"""gorkheavy: the ensemble orchestrator of gorkheavy-lite."""

__version__ = "0.1.0"
