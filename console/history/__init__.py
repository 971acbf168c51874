"""Runs over time: what changed between runs (diff), recurring runs (schedules), the end-of-run message
(notify), the latest known state of every host (assets) and amending a run's stages that have not started.

Reads and writes go through the store's interface only (``store.history``, ``store.schedules``).
"""
