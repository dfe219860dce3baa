"""The pure core of the orchestrator: pipeline plan, prompts, judge parsing, memory window, result types.

Nothing in this package performs network or disk I/O or imports aiohttp; the pipeline reaches models and
memory through the protocols in :mod:`gorkheavy.core.pipeline`.
"""
