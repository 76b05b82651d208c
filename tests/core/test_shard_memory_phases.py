"""The memory table's peak by phase (``rosetta.conformance.shard_memory``): the peak resets to
the current RSS, and the worst worker's growth per phase is taken over the workers' own starts.
The measurement itself is a command (its numbers are in docs/guide/distributed.md)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from rosetta.conformance import shard_memory as sm


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/clear_refs")
def test_the_peak_resets_to_the_current_rss():
    block = np.ones(64 * 2 ** 20 // 8)   # 64 MiB touched
    del block
    assert sm._rss_mb() - sm._current_rss_mb() > 48
    assert sm._reset_peak()
    assert sm._rss_mb() - sm._current_rss_mb() < 16


def test_the_worst_worker_per_phase_over_its_own_start():
    records = [{"rss_before_mb": 100.0,
                "phases_mb": {"built": 150.0, "first_update": 400.0, "later_updates": 250.0}},
               {"rss_before_mb": 130.0,
                "phases_mb": {"built": 170.0, "first_update": 410.0, "later_updates": 240.0}}]
    assert sm._phase_growth(records) == {"built": 50.0, "first_update": 300.0,
                                         "later_updates": 150.0}
    del records[1]["phases_mb"]["later_updates"]   # one update only, or no reset
    assert sm._phase_growth(records) is None
