"""Helpers shared by meshcert's engine-free tests (fakes only here: never in conformance/)."""
