"""The conformance tests (thin: the checks live in meshcert.checks). Installed as meshcert.suite.conformance."""
