"""meshcert: conformance and chaos tests for Legator's connectivity layer."""

__version__ = "0.1.0"
