"""meshcert: conformance and chaos tests for Legator's connectivity layer."""

import os

# Every entry (the pytest plugin, the CLI, library use of meshcert.world / meshcert.k8s)
# imports this package before testcontainers, which reads its config at import: Ryuk
# (testcontainers' reaper container) cannot be pulled without a registry, and meshcert labels
# everything it starts and sweeps it itself (meshcert/world/labels.py), so the reaper is off.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

__version__ = "0.1.0"
