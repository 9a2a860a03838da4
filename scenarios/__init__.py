"""The chaos scenarios. Installed as meshcert.suite.scenarios."""
