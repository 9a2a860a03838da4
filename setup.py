"""The package list only (everything else is in pyproject.toml): find("meshcert*") plus the
checkout's top-level conformance/ and scenarios/ folders, shipped as meshcert.suite.conformance
and meshcert.suite.scenarios (mapped in pyproject's [tool.setuptools.package-dir])."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["meshcert", "meshcert.*"]),
                "meshcert.suite.conformance", "meshcert.suite.scenarios"])
