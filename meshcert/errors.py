"""Errors that meshcert reports to its user as one clear line (never a deep traceback)."""


class MeshcertError(Exception):
    """A problem with an input or the environment that the user can fix.

    ``what`` names the input or prerequisite, ``fix`` says what to do. The CLI prints
    ``meshcert: <what>: <message> (fix: <fix>)`` and exits with code 2.
    """

    exit_code = 2

    def __init__(self, what: str, message: str, fix: str = ""):
        self.what = what
        self.message = message
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        line = f"{self.what}: {self.message}"
        if self.fix:
            line += f" (fix: {self.fix})"
        return line


class InputError(MeshcertError):
    """Malformed input: a policy, a spec, a topology, an answer of the SUT."""


class EnvironmentProblem(MeshcertError):
    """A prerequisite of the machine is missing and cannot be installed here."""
