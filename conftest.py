"""Thin on purpose: meshcert's fixtures, options and markers come from its pytest plugin
(meshcert/plugin/: hooks.py, fixtures.py; registered as a pytest11 entry point), so an
installed meshcert and this checkout run the suite the same way."""
