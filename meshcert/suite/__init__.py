"""The conformance suite as installed: ``meshcert.suite.conformance`` and ``meshcert.suite.scenarios``
are the checkout's top-level conformance/ and scenarios/ folders, mapped into the wheel by
pyproject.toml ([tool.setuptools.package-dir]). In a checkout this folder holds only this file and
pytest.ini (the installed suite's pytest settings, kept equal to pyproject's by tests/package/test_install.py)."""
