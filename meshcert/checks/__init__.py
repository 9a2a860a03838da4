"""Clause checks: what each conformance test asserts, as library code (so meshcert's own tests
can run them against broken worlds and mutants and see them fail)."""

from meshcert.checks.base import ClauseFailure, Probe, check_reachability  # noqa: F401
