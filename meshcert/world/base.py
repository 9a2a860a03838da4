"""The bottom of the world package: its error, the condition wait (``wait_for``) and the small
readers of real state a timeout reports, a container handle (``Box``), a node agent's client
(``NodeAPI``) and the launcher's signature (``Launcher``: what every container-kind module is
given to start its containers with). Nothing here imports the rest of the package, so every
module above (the container kinds, world, isolation, extra) can take these without an import
circle. The two pure readers ``brief_error`` and ``log_tail`` live one floor lower, in
meshcert/observed.py, so the SUT client (below the world) can use them too."""

from __future__ import annotations

import io
import re
import tarfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import docker
import docker.errors
import httpx
import requests

from meshcert.errors import MeshcertError
from meshcert.observed import brief_error, log_tail  # noqa: F401  (re-exported: the world's readers of state)
from meshcert.secrets import redact

T = TypeVar("T")
NODE_API = 9999


class WorldError(MeshcertError):
    """The world could not be built or did not reach the state we waited for."""

    def __init__(self, message: str, fix: str = ""):
        super().__init__("world", redact(message), fix)


def http_state(url: str, timeout: float = 2.0, **kw: Any) -> str:
    """What a GET of ``url`` answers right now: ``HTTP 200``, ``HTTP 503``, ``connection refused``..."""
    s = requests.Session()
    s.trust_env = False  # stay on this machine
    try:
        return f"HTTP {s.get(url, timeout=timeout, **kw).status_code}"
    except requests.RequestException as e:
        return brief_error(e)
    finally:
        s.close()


def container_state(box: Box, lines: int = 5) -> str:
    """A container's state and the last lines of its log, labelled as such (its log may be a
    tool's usage text: that is what the container printed, not what we observed of the service)."""
    try:
        box.container.reload()
        st = box.container.attrs.get("State") or {}
        state = st.get("Status", "?")
        if state == "exited":
            state = f"exited with code {st.get('ExitCode')}"
    except Exception as e:  # the container may be gone
        state = f"unknown ({brief_error(e)})"
    tail = log_tail(box.logs(), lines)
    return f"container {box.name} {state}; " + (
        f"last {len(tail)} log line(s): " + " | ".join(repr(t) for t in tail) if tail else "its log is empty")


_NOTHING = object()


# A wait paces itself by what its observation costs: after a check that took c seconds it pauses
# max(interval, PACE_FACTOR * c), at most PACE_CAP_S, and never past its deadline (where it checks
# once more). A cheap check (an HTTP request to a node agent: milliseconds) keeps ``interval``; a
# check that starts processes (`docker exec ... kubectl`) no longer polls flat out. Measured
# (bench/results/poll-cost-*): one `kubectl get` through `docker exec` into an idle kind node takes
# 0.13 s and 0.16 s of CPU (more CPU than wall time: the engine, the exec, kubectl), so at the old
# fixed 0.2 s a wait on a pod kept half a core busy; paced, about a quarter when the machine is
# idle and less under load (slower checks, longer pauses). The cap bounds the lateness a slow
# check adds (a 1.5 s dial timing out: 1 s more, not 6 s).
PACE_FACTOR = 4.0
PACE_CAP_S = 1.0


def wait_for(what: str, fn: Callable[[], T | None], timeout: float, interval: float = 0.2,
             describe: Callable[[], str] | None = None) -> T:
    """Poll ``fn`` until it returns a truthy value; raise with the last observation on timeout.
    The pause between checks is ``interval``, longer after a slow check (PACE_FACTOR above).

    The message's "observed" is real state: ``describe()`` (read once more at the timeout) when
    given, the last exception of ``fn`` in a few words (``connection refused``, ``HTTP 503``),
    or the last value ``fn`` returned. A ``describe`` that fails is reported as such, beside
    the last exception -- never replaced by something else.
    """
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    last_value: Any = _NOTHING
    while True:
        began = time.monotonic()
        try:
            v = fn()
            if v:
                return v
            last_value, last_exc = v, None
        except Exception as e:  # observed state is not there yet
            last_exc = e
        now = time.monotonic()
        if now >= deadline:
            raise WorldError(f"timed out after {timeout:.0f}s waiting for {what}; observed: "
                             + _observed(describe, last_exc, last_value))
        time.sleep(min(pause(interval, now - began), deadline - now))


def pause(interval: float, cost: float) -> float:
    """The pause after a check that took ``cost`` seconds (see PACE_FACTOR)."""
    return max(interval, min(PACE_FACTOR * cost, PACE_CAP_S))


def _observed(describe: Callable[[], str] | None, last_exc: Exception | None, last_value: Any) -> str:
    parts = []
    if describe is not None:
        try:
            d = describe()
            parts.append(str(d).strip() or "(the state read back empty)")
        except Exception as e:
            parts.append(f"(could not read the state: {brief_error(e)})")
    if last_exc is not None:
        parts.append(f"last check failed: {brief_error(last_exc)}")
    elif describe is None:
        parts.append("the check never ran" if last_value is _NOTHING
                     else f"the check last returned {redact(repr(last_value))[:300]}")
    return redact("; ".join(parts))


def tar_files(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar of {path: (bytes, mode)} for put_archive."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# `docker exec` loses a fast-exiting process's output now and then: exit 0, nothing printed
# (moby/moby#27289, docker/docker-py#2042; seen here on engine 20.10 under a load of 12-27, twice
# from a headscale CLI whose JSON answer was then missing). A command whose answer the caller needs
# runs under this wrapper: its output (stdout and stderr, as exec gives them) goes to a file in the
# container, which it then prints; an empty file is removed. When the exec's output comes back
# empty, the file is read again (ANSWER_REREADS times at most): no file means the command printed
# nothing. Files already read are removed by the next answered exec in that container.
# The file lives in the first writable of ANSWER_DIRS (a pod's root file system may be read-only;
# /dev/shm is a tmpfs the runtime mounts in every container and pod); with none, the command runs
# as is. Arguments: $1 the file's name, $2 the count of old names, then those, then the command.
ANSWER_DIRS = "/dev/shm /tmp"
_ANSWER_SH = ('n=$1; k=$2; shift 2; while [ "$k" -gt 0 ]; do for d in ' + ANSWER_DIRS + '; do rm -f -- "$d/$1"; '
              'done; shift; k=$((k-1)); done; umask 077; f=; for d in ' + ANSWER_DIRS + '; do '
              'if true 2>/dev/null >"$d/$n"; then f=$d/$n; break; fi; done; [ -n "$f" ] || exec "$@"; '
              '"$@" >"$f" 2>&1; rc=$?; [ -s "$f" ] || rm -f -- "$f"; cat -- "$f" 2>/dev/null; exit $rc')
_REREAD_SH = 'for d in ' + ANSWER_DIRS + '; do [ -f "$d/$1" ] && exec cat -- "$d/$1"; done; exit 1'
ANSWER_REREADS = 4
# what the engine (runc) or kubectl says when the container has no `sh` to run the wrapper with
_NO_SHELL = re.compile(r'exec: "sh": executable file not found|"sh": stat sh: no such file')


def raw_exec(container: Any, cmd: list[str], **kw: Any) -> tuple[int, str]:
    """One ``docker exec`` in ``container`` (a docker-py Container): exit code and merged output;
    ``kw`` goes to exec_run (``environment``)."""
    r = container.exec_run(cmd, demux=False, **kw)
    return r.exit_code, (r.output.decode(errors="replace") if r.output else "")


class Answers:
    """Execs whose output is read back from a file when docker exec lost it (see _ANSWER_SH);
    one per container, for the files it has read and will remove."""

    def __init__(self) -> None:
        self._read: list[str] = []
        self._lock = threading.Lock()
        self.shell = True  # False once the container showed it has no `sh` (a user's distroless image)

    def exec(self, container: Any, cmd: list[str], where: str,
             run: Callable[..., tuple[int, str]] = raw_exec, **kw: Any) -> tuple[int, str]:
        """``cmd`` in ``container`` by ``run`` (raw_exec, or a kubectl exec), ``kw`` passed on."""
        if not self.shell:
            return run(container, cmd, **kw)
        name = f"meshcert-answer-{uuid.uuid4().hex[:16]}"
        with self._lock:
            old, self._read = self._read, []
        code, out = run(container, ["sh", "-c", _ANSWER_SH, "sh", name, str(len(old)), *old, *cmd], **kw)
        if code in (126, 127) and _NO_SHELL.search(out):
            self.shell = False
            return run(container, cmd, **kw)
        for reread in range(ANSWER_REREADS + 1):
            if out:
                with self._lock:
                    self._read.append(name)
                return code, out
            if reread == ANSWER_REREADS:
                break
            found, out = run(container, ["sh", "-c", _REREAD_SH, "sh", name])
            if found in (126, 127) and code in (126, 127):  # no `sh`, and the message saying so was lost
                self.shell = False
                return run(container, cmd, **kw)
            if found != 0:  # no file: the command printed nothing
                return code, ""
        raise WorldError(f"{where}: `{redact(' '.join(cmd))[:200]}` exited {code}, and its output, kept as "
                         f"{name} in {ANSWER_DIRS} there, came back empty {ANSWER_REREADS + 1} times (docker exec losing output)",
                         "look at the engine's load and log (dockerd.log)")


@dataclass
class Box:
    """One container of ours."""
    name: str
    container: Any  # docker.models.containers.Container
    role: str
    answers: Answers = field(default_factory=Answers, repr=False, compare=False)

    def exec(self, cmd: list[str], *, answer: bool = False, environment: dict[str, str] | None = None
             ) -> tuple[int, str]:
        """Run ``cmd`` in the container: exit code and merged output. ``answer``: the caller reads
        the output (a JSON reader, a create, a log whose emptiness a negative relies on): it is kept
        in a file and read again if docker exec lost it (Answers)."""
        kw = {"environment": environment} if environment else {}
        if answer:
            return self.answers.exec(self.container, cmd, self.name, **kw)
        return raw_exec(self.container, cmd, **kw)

    def put(self, files: dict[str, tuple[bytes, int]]) -> None:
        if not self.container.put_archive("/", tar_files(files)):
            raise WorldError(f"could not copy files into {self.name}")

    def ip(self, network: str) -> str:
        self.container.reload()
        nets = self.container.attrs["NetworkSettings"]["Networks"]
        if network not in nets:
            raise WorldError(f"{self.name} is not attached to network {network}")
        return nets[network]["IPAddress"]

    def logs(self) -> str:
        try:
            return redact(self.container.logs(timestamps=True).decode(errors="replace"))
        except docker.errors.APIError as e:
            return f"(logs unavailable: {e})"


class Launcher(Protocol):
    """Starts one labelled container of the run (``World.run_container``): named for ``role``,
    on ``network`` (a topology network name) with ``aliases``, ``files`` copied in before start,
    other keywords passed to the engine. Each container-kind module takes one of these rather
    than the World, so it never imports the composition above it."""

    def __call__(self, role: str, image: str, command: list[str] | None, *, network: str | None = None,
                 aliases: list[str] | None = None, files: dict[str, tuple[bytes, int]] | None = None,
                 **kwargs: Any) -> Box: ...


class NodeAPI:
    """meshcert's node agent inside a container (or pod): dials and LocalAPI reads."""

    def __init__(self, name: str, host: str, port: int = NODE_API):
        self.name = name
        self.base = f"http://{host}:{port}"
        self.session = requests.Session()
        self.session.trust_env = False  # never a proxy from the environment: traffic stays on this machine

    def dial(self, probes: list[tuple[str, int]], timeout: float = 3.0, socks5: str | None = None) -> list[dict]:
        body = {"probes": [{"host": h, "port": p, "timeout": timeout} for h, p in probes], "socks5": socks5}
        r = self.session.post(self.base + "/dial", json=body, timeout=timeout * 2 + 10)
        r.raise_for_status()
        return r.json()["results"]

    async def adial(self, probes: list[tuple[str, int]], timeout: float = 3.0, socks5: str | None = None) -> list[dict]:
        """:meth:`dial` as a coroutine (the probe engine runs every probe as a task of one event
        loop: meshcert.checks.base.reach). One client per call: the API is plain HTTP on the
        world's bridge (no TLS, so no certificate store is loaded: 0.2 ms, not 22 ms, a client)."""
        body = {"probes": [{"host": h, "port": p, "timeout": timeout} for h, p in probes], "socks5": socks5}
        try:
            async with httpx.AsyncClient(trust_env=False, verify=False, timeout=timeout * 2 + 10) as client:
                r = await client.post(self.base + "/dial", json=body)
            r.raise_for_status()
            return r.json()["results"]
        except (httpx.HTTPError, ValueError, KeyError) as e:
            raise WorldError(f"{self.name}: node agent POST {self.base}/dial: {brief_error(e)}") from None

    def localapi(self, path: str) -> Any:
        r = self.session.get(f"{self.base}/localapi/v0/{path}", timeout=10)
        if r.status_code != 200:
            raise WorldError(f"{self.name}: LocalAPI {path} answered {r.status_code}: {r.text[:200]}")
        return r.json()

    def status(self) -> dict:
        return self.localapi("status")

    def tsmp_ping(self, ip: str, timeout: float) -> str | None:
        """One TSMP ping through tailscaled's LocalAPI (the call `tailscale ping --tsmp -c 1` makes):
        None when the peer answered, else what was seen."""
        try:
            r = self.session.post(f"{self.base}/localapi/v0/ping", params={"ip": ip, "type": "TSMP"},
                                  headers={"X-Meshcert-Timeout": f"{timeout:g}"}, timeout=timeout + 10)
        except requests.RequestException as e:
            return brief_error(e)
        if r.status_code != 200:
            return f"HTTP {r.status_code}: {r.text.strip()[:200]}"
        try:
            err = (r.json() or {}).get("Err") or ""
        except ValueError:
            return f"HTTP 200 without JSON: {r.text.strip()[:200]}"
        return None if not err else err

    def edit_prefs(self, masked: dict) -> dict:
        """PATCH the LocalAPI prefs (the EditPrefs call `tailscale set` makes); the prefs now held."""
        r = self.session.patch(f"{self.base}/localapi/v0/prefs", json=masked, timeout=15)
        if r.status_code != 200:
            raise WorldError(f"{self.name}: LocalAPI PATCH prefs {sorted(masked)} answered {r.status_code}: "
                             f"{r.text[:200]}")
        return r.json()

    def routes(self, addrs: list[str]) -> dict[str, str]:
        """``ip -4 -o route get`` of each address, in the agent's network namespace."""
        r = self.session.post(self.base + "/routes", json={"addrs": addrs}, timeout=15)
        r.raise_for_status()
        return r.json()["routes"]

    def filter_rules(self) -> list:
        return self.localapi("debug-packet-filter-rules") or []

    def healthy(self) -> bool:
        try:
            return self.session.get(self.base + "/health", timeout=2).ok
        except requests.RequestException:
            return False
