"""Client of the SUT contract (JSON over HTTP inside the agent pod; README "The SUT contract").

Every answer is validated: a SUT that answers garbage ends in one InputError naming the SUT,
the call and what was wrong -- never a traceback from deep inside.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

import docker.errors
import requests

from meshcert.errors import InputError, MeshcertError
from meshcert.observed import brief_error, log_tail
from meshcert.secrets import redact

PRERUN_KEYS = {"type": str, "ready": bool, "message": str, "endpoints": dict, "logs": list, "agent_context": list}
ENDPOINT_KEYS = {"reachable": bool}


class SutClient:
    def __init__(self, base_url: str, name: str = "SUT", timeout: float = 60.0):
        self.base = base_url.rstrip("/")
        self.name = name
        self.timeout = timeout
        self.s = requests.Session()
        self.s.trust_env = False  # stay on this machine, whatever proxy the environment names

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        try:
            r = self.s.request(method, self.base + path, json=body, timeout=self.timeout)
        except requests.RequestException as e:
            raise InputError(f"{self.name} {method} {path}", f"no answer: {type(e).__name__}",
                             "check the SUT container's logs; it must listen on --sut-port") from None
        try:
            data = r.json()
        except ValueError:
            raise InputError(f"{self.name} {method} {path}",
                             f"answered HTTP {r.status_code} with non-JSON: {redact(r.text[:120])!r}",
                             "the SUT must answer JSON (README: The SUT contract)") from None
        return r.status_code, data

    def healthy(self) -> bool:
        return self.health_state() == "HTTP 200"

    def health_state(self) -> str:
        """What GET /healthz answers now: ``HTTP 200``, ``HTTP 404``, ``connection refused``, ``timed out``."""
        try:
            return f"HTTP {self.s.get(self.base + '/healthz', timeout=2).status_code}"
        except requests.RequestException as e:
            return brief_error(e)

    def prerun(self, connectivity: dict | None, endpoints: dict, deadline_s: float | None = None,
               omit_connectivity: bool = False) -> tuple[int, dict]:
        body: dict[str, Any] = {"endpoints": endpoints}
        if not omit_connectivity:
            body["connectivity"] = connectivity
        if deadline_s is not None:
            body["deadline_s"] = deadline_s
        code, data = self._call("POST", "/prerun", body)
        if code == 200 or code == 503:
            self._validate_prerun(data, endpoints)
        elif not isinstance(data, dict) or not isinstance(data.get("error"), str):
            raise InputError(f"{self.name} POST /prerun", f"HTTP {code} without an \"error\" string",
                             "a rejected spec must answer {\"error\": \"...\"}")
        return code, data

    # -- the run lifecycle (issue 13; README: The SUT contract) ----------------------------------
    def _run_call(self, path: str, body: dict, keys: dict[str, type | tuple]) -> tuple[int, dict]:
        """POST a run-lifecycle call; a 200 must carry ``keys`` with those types, an error an "error" string."""
        code, data = self._call("POST", path, body)
        if not isinstance(data, dict):
            raise InputError(f"{self.name} POST {path}", f"HTTP {code} with a non-object answer",
                             "the SUT must answer a JSON object (README: The SUT contract)")
        want = keys if code == 200 else {"error": str}
        for k, t in want.items():
            if not isinstance(data.get(k), t):
                raise InputError(f"{self.name} POST {path}", f"HTTP {code} without {k!r} of type {t}",
                                 "README: The SUT contract, the run lifecycle")
        return code, data

    def run_start(self, run: str, length_s: float, deadline_s: float | None = None) -> tuple[int, dict]:
        body: dict[str, Any] = {"run": run, "length_s": length_s}
        if deadline_s is not None:
            body["deadline_s"] = deadline_s
        return self._run_call("/run/start", body, {"run": str, "ok": bool})

    def run_exec(self, run: str, host: str, command: str, timeout_s: float = 15) -> tuple[int, dict]:
        return self._run_call("/run/exec", {"run": run, "host": host, "command": command, "timeout_s": timeout_s},
                              {"ok": bool, "stdout": str, "stderr": str})

    def run_query(self, run: str, host: str, sql: str, timeout_s: float = 15) -> tuple[int, dict]:
        return self._run_call("/run/query", {"run": run, "host": host, "sql": sql, "timeout_s": timeout_s},
                              {"ok": bool, "stdout": str, "stderr": str})

    def run_end(self, run: str) -> tuple[int, dict]:
        return self._run_call("/run/end", {"run": run}, {"run": str, "ok": bool})

    def _validate_prerun(self, data: Any, endpoints: dict) -> None:
        what = f"{self.name} POST /prerun answer"
        if not isinstance(data, dict):
            raise InputError(what, f"not a JSON object: {redact(str(data)[:80])!r}", "see README: The SUT contract")
        for k, t in PRERUN_KEYS.items():
            if not isinstance(data.get(k), t):
                raise InputError(what, f"field {k!r} missing or not {t.__name__}", "see README: The SUT contract")
        for name, ep in data["endpoints"].items():
            if not isinstance(ep, dict) or not isinstance(ep.get("reachable"), bool):
                raise InputError(what, f"endpoints.{name}.reachable missing or not bool", "")
        for i, line in enumerate(data["logs"]):
            if not isinstance(line, dict) or not isinstance(line.get("level"), str) or not isinstance(line.get("msg"), str):
                raise InputError(what, f"logs[{i}] must be an object with string level and msg", "")

    def connect(self, host: str, port: int, timeout_s: float = 3.0, credential: dict | None = None) -> dict:
        body = {"host": host, "port": port, "timeout_s": timeout_s}
        if credential is not None:
            body["credential"] = credential  # what the tool layer injects (Vault-issued, per run)
        code, data = self._call("POST", "/connect", body)
        if code != 200 or not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
            raise InputError(f"{self.name} POST /connect", f"HTTP {code}, answer without boolean \"ok\"",
                             "see README: The SUT contract")
        return data

    def transcript(self) -> list:
        code, data = self._call("GET", "/transcript")
        if code != 200 or not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            raise InputError(f"{self.name} GET /transcript", f"HTTP {code}, no \"entries\" list", "")
        return data["entries"]


# ------------------------------------------------------------------ a SUT that cannot be tested

class SutNotTestable(MeshcertError):
    """The SUT could not be tested at all: its image is not on the engine, or it never served
    GET /healthz when the world started it. Not a failed certification: the run is reported as
    *not tested* with this reason (every clause "not tested", none failed) and exits 2.

    ``one_line()`` is the reason; ``log`` the last lines of the SUT container's log (redacted).
    """

    def __init__(self, what: str, message: str, fix: str = "", log: list[str] | tuple[str, ...] = ()):
        super().__init__(what, redact(message), fix)
        self.log = [redact(line) for line in log]

    def to_data(self) -> dict:
        return {"reason": self.one_line(), "log": list(self.log)}


def load_fix(image: str) -> str:
    return (f"load it into this engine first: `docker load -i FILE.tar` (a file written by `docker save`), "
            f"or `docker tag IMAGE {image}` for an image already built here; `docker images` lists them "
            "(meshcert never pulls images)")


def require_image(client, image: str) -> dict:
    """The engine's ``docker inspect`` of ``image``; SutNotTestable naming it and how to load it
    when the engine does not have it."""
    try:
        return client.images.get(image).attrs
    except docker.errors.ImageNotFound:
        raise SutNotTestable("--sut-image", f"image {image} is not on this engine", load_fix(image)) from None
    except docker.errors.APIError as e:  # e.g. a malformed reference: still nothing to test
        raise SutNotTestable("--sut-image", f"image {image}: the engine answered {e.explanation or e}",
                             load_fix(image)) from None


def command_of(config: dict | None) -> str:
    """A container's (or image's) Config as the command it runs: ENTRYPOINT and CMD, shell-quoted."""
    config = config or {}
    ep, cmd = config.get("Entrypoint") or [], config.get("Cmd") or []
    ep = [ep] if isinstance(ep, str) else list(ep)
    cmd = [cmd] if isinstance(cmd, str) else list(cmd)
    if not ep and not cmd:
        return "no command at all (neither ENTRYPOINT nor CMD)"
    parts = []
    if ep:
        parts.append(f"ENTRYPOINT `{shlex.join(ep)}`")
    parts.append(f"CMD `{shlex.join(cmd)}`" if cmd else "no CMD")
    return ", ".join(parts)


# The reference SUT (one stdlib file) answers /healthz about 1 s after its container starts; 30 s
# covers a user's slower runtime starting on a loaded 2-core machine.
HEALTHZ_TIMEOUT_S = 30.0
LOG_LINES = 8


def _answers_the_contract(client: SutClient, pod: str) -> None:
    """A SUT serving /healthz answers the contract's read-only call, ``GET /transcript``, in JSON:
    one that answers garbage (HTML, text) is not testable, said once when the world starts it --
    not found by each test in turn, each worker's first test after its world was built."""
    try:
        client.transcript()
    except InputError as e:
        raise SutNotTestable(f"SUT in pod {pod}", e.message, "the SUT must answer JSON (README: The SUT contract)") \
            from None


def wait_serving(client: SutClient, box, pod: str, port: int, image: str,
                 timeout: float = HEALTHZ_TIMEOUT_S, interval: float = 0.25) -> None:
    """Wait until the SUT in ``box`` answers GET /healthz with 200. A container that exits ends the
    wait at once. Raises SutNotTestable naming the pod, the port, what /healthz last answered,
    the container's state and the command its image runs, with the last lines of its log."""
    deadline = time.monotonic() + timeout
    state, status = "never probed", "?"
    while True:
        state = client.health_state()
        if state == "HTTP 200":
            _answers_the_contract(client, pod)
            return
        try:
            box.container.reload()
            st = box.container.attrs.get("State") or {}
            status = st.get("Status", "?")
            if status in ("exited", "dead"):
                status = f"exited with code {st.get('ExitCode')}"
                break
        except Exception as e:  # removed under us: nothing will answer
            status = f"gone ({type(e).__name__})"
            break
        if time.monotonic() >= deadline:
            status = "still running" if status == "running" else status
            break
        time.sleep(interval)
    try:
        config = box.container.attrs.get("Config")
    except Exception:
        config = None
    lines = log_tail(box.logs(), LOG_LINES)
    waited = "" if status.startswith(("exited", "gone")) else f" within {timeout:.0f} s"
    raise SutNotTestable(
        f"SUT in pod {pod}",
        f"never answered GET /healthz on port {port}{waited} (last: {state}); its container {status}; "
        f"image {image} runs {command_of(config)}",
        "the SUT must serve the contract on --sut-port (README: The SUT contract)"
        + ("; the last lines of its log follow" if lines else "; its log is empty"),
        lines)
