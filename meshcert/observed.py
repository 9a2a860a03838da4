"""Observed state in a few words, for failure messages: an exception as what it saw
(``brief_error``: ``connection refused``, ``timed out``...) and the tail of a container's log
(``log_tail``). Pure functions on the bottom floor (they import only requests and secrets), so
both the world and the SUT client, which sits below the world, can use them."""

from __future__ import annotations

import errno as _errno
import re

import requests

from meshcert.secrets import redact


def brief_error(e: BaseException) -> str:
    """An exception as the state it observed, in a few words: ``connection refused``,
    ``timed out``, ``HTTP 503``, or the exception's own first line (never a traceback)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:  # the root cause of a requests/urllib3 error
        seen.add(id(cur))
        if isinstance(cur, ConnectionRefusedError) or getattr(cur, "errno", None) == _errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(cur, (TimeoutError, requests.Timeout)):
            return "timed out"
        if isinstance(cur, OSError) and getattr(cur, "errno", None) in (_errno.EHOSTUNREACH, _errno.ENETUNREACH):
            return "no route to host"
        nxt = cur.__cause__ or cur.__context__
        if nxt is None and cur.args and isinstance(cur.args[0], BaseException):
            nxt = cur.args[0]
        if nxt is None and getattr(cur, "reason", None) is not None and isinstance(cur.reason, BaseException):
            nxt = cur.reason
        cur = nxt
    text = str(e)
    for marker in ("Connection refused", "timed out", "Name or service not known", "No route to host"):
        if marker in text:
            return marker.lower()
    first = (text.strip().splitlines() or [""])[0]
    return redact(f"{type(e).__name__}: {first[:300]}" if first else type(e).__name__)


_DOCKER_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z ?")


def log_tail(text: str, lines: int = 5, width: int = 200) -> list[str]:
    """The last ``lines`` non-empty lines of a log (docker's timestamps taken off), each cut to
    ``width`` characters."""
    out = [ln.rstrip() for ln in (_DOCKER_TS.sub("", raw) for raw in (text or "").splitlines()) if ln.strip()]
    return [ln if len(ln) <= width else ln[:width] + " …" for ln in out[-lines:]]
