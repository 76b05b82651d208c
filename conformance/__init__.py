"""Conformance: comparing backends against each other and against the NumPy oracles.

``compare`` holds the worst-element comparator every agreement check reports through.
"""

from rosetta.conformance.compare import Worst, compare_arrays, compare_trees

__all__ = ["Worst", "compare_arrays", "compare_trees"]
