"""Secrets (pre-auth keys, credentials) never reach logs, reports or failure messages.

Every secret meshcert handles is wrapped in :class:`Secret` (whose str/repr is redacted) and
registered, and :func:`redact` scrubs out of text, before it is printed or written, every
registered value, every run of :data:`MIN_RUN` or more characters of a registered value's
secret part (the text after its last ``-``: a part of a key is a leak too), and anything shaped
like a Headscale/Tailscale key.

:func:`leaks` is the one finder the checks and meshcert's own self-checks use: it says *where*
a secret (or a part of it, or something key-shaped: auth keys, Vault tokens, private keys) is in a text, never what it is.

    >>> leaks("user=alice tail=" + key.rsplit("-", 1)[1][-12:], key)
    [Leak(start=16, end=28, kind='run')]
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_lock = threading.Lock()
_values: set[str] = set()
# Shapes of auth keys, whoever made them. Headscale >= 0.27 makes `hskey-auth-<prefix>-<secret>`;
# Tailscale makes `tskey-<kind>-<id>-<secret>`; headscale < 0.27 made 48 lowercase hex characters.
# Vault's tokens (issue 13): `hvs.` service, `hvb.` batch, `hvr.` recovery tokens, then at least
# 24 characters (vault/helper/... token prefixes since Vault 1.10); a private key in PEM or
# OpenSSH form, whole (an SSH key a run made, a TLS key); an OpenSSH certificate (a run's, signed
# by Vault): never text to show.
KEY_SHAPES = re.compile(r"\b(?:hskey-[A-Za-z0-9_-]+|tskey-[A-Za-z0-9_-]+|[0-9a-f]{48}|hv[sbr]\.[A-Za-z0-9_-]{24,})\b"
                        r"|-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----"
                        r"|[a-z0-9-]+-cert-v01@openssh\.com AAAA[A-Za-z0-9+/]{40,}=*", re.S)
# headscale 0.29's own format (hscontrol/db/preauth_keys.go: a 12-character prefix, `-`, a
# 64-character secret, both URL-safe base64, so either may hold `-` or `_`).
HSKEY = re.compile(r"hskey-auth-[A-Za-z0-9_-]{12}-(?P<secret>[A-Za-z0-9_-]{64})\Z")
MASK = "«redacted»"
# A run this long of a key's secret part is a leak: with the secret's alphabet (64 characters)
# a chance match of 8 given characters is about 1 in 3e14 per position, so a hit is a copy,
# while a shorter run (a log truncating a key to "its last 4") would still be guessable from.
MIN_RUN = 8
SCAN_MAX_BYTES = 64 << 20  # a file larger than this is read up to here (logs are far smaller)


class Secret:
    __slots__ = ("_v", "label")

    def __init__(self, value: str, label: str = "secret"):
        self._v = value
        self.label = label
        register(value)

    def reveal(self) -> str:
        return self._v

    def __str__(self) -> str:
        return f"{MASK}({self.label})"

    __repr__ = __str__


def register(value: str) -> None:
    if value and len(value) >= 6:
        with _lock:
            _values.add(value)


def registered() -> list[str]:
    """Every registered secret, longest first (for the self-checks that scan meshcert's outputs)."""
    with _lock:
        return sorted(_values, key=len, reverse=True)


def secret_part(value: str) -> str:
    """The part of a key that is secret: the text after its last ``-`` (the whole value when it
    has none) -- except for headscale's keys, ``hskey-auth-<12-character prefix>-<64-character
    secret>`` in URL-safe base64, whose secret may itself hold ``-``: there it is those 64
    characters (headscale parses its keys by length for the same reason)."""
    m = HSKEY.match(value)
    return m.group("secret") if m else value.rsplit("-", 1)[-1]


@dataclass(frozen=True)
class Leak:
    """Where a secret is in a text: characters [start, end) and what was found there --
    ``key`` (the whole secret), ``run`` (a run of >= MIN_RUN characters of its secret part) or
    ``key-shaped`` (anything shaped like an auth key). Holds no secret."""
    start: int
    end: int
    kind: str

    def describe(self, text: str | None = None) -> str:
        what = {"key": "the secret itself", "run": f"a run of {self.end - self.start} characters of its secret part",
                "key-shaped": f"a key-shaped string of {self.end - self.start} characters"}.get(self.kind, self.kind)
        if text is None:
            return f"{what} at characters {self.start}-{self.end}"
        line = text.count("\n", 0, self.start) + 1
        col = self.start - (text.rfind("\n", 0, self.start) + 1) + 1
        return f"{what} at line {line}, column {col}"


@functools.lru_cache(maxsize=32)
def _pieces(parts: tuple[str, ...]) -> tuple[frozenset[str], re.Pattern | None]:
    """Every MIN_RUN-character piece of ``parts``, and a pattern for the stretches of text made
    only of their characters (the only places a run can be)."""
    parts = tuple(p for p in parts if len(p) >= MIN_RUN)
    grams = frozenset(p[i:i + MIN_RUN] for p in parts for i in range(len(p) - MIN_RUN + 1))
    chars = sorted(set("".join(parts)))
    if not chars:
        return grams, None
    return grams, re.compile("[" + "".join(re.escape(ch) for ch in chars) + f"]{{{MIN_RUN},}}")


def _runs(text: str, parts: tuple[str, ...]) -> list[tuple[int, int]]:
    """Character ranges of ``text`` covered by runs of >= MIN_RUN characters of any of ``parts``
    (overlapping MIN_RUN-character pieces merged). One pass over the text for all the parts."""
    grams, stretch = _pieces(parts)
    if stretch is None or len(text) < MIN_RUN:
        return []
    spans: list[tuple[int, int]] = []
    for m in stretch.finditer(text):
        s, base = m.group(), m.start()
        for i in range(len(s) - MIN_RUN + 1):
            if s[i:i + MIN_RUN] in grams:
                a, b = base + i, base + i + MIN_RUN
                if spans and a <= spans[-1][1]:
                    spans[-1] = (spans[-1][0], max(spans[-1][1], b))
                else:
                    spans.append((a, b))
    return spans


def leaks(text: str, secret: str | Secret | Iterable[str | Secret] | None = None, *,
          shapes: bool = True) -> list[Leak]:
    """Every place in ``text`` holding ``secret`` (one value or several): the whole value, a run
    of >= MIN_RUN characters of its secret part, and (``shapes``) anything shaped like an auth
    key. Sorted by position; a finding inside a larger one is not listed again. The result
    holds positions and kinds only, never a secret."""
    if not text:
        return []
    if secret is None:
        values: list[str] = []
    elif isinstance(secret, (str, Secret)):
        values = [secret.reveal() if isinstance(secret, Secret) else secret]
    else:
        values = [s.reveal() if isinstance(s, Secret) else s for s in secret]
    found: list[Leak] = []
    for v in values:
        if not v:
            continue
        start = text.find(v)
        while start >= 0:
            found.append(Leak(start, start + len(v), "key"))
            start = text.find(v, start + 1)
    found += [Leak(a, b, "run") for a, b in _runs(text, tuple(sorted({secret_part(v) for v in values if v})))]
    if shapes:
        found += [Leak(m.start(), m.end(), "key-shaped") for m in KEY_SHAPES.finditer(text)]
    rank = {"key": 0, "key-shaped": 1, "run": 2}
    found.sort(key=lambda x: (x.start, -(x.end - x.start), rank.get(x.kind, 3)))
    out: list[Leak] = []
    for f in found:
        if any(o.start <= f.start and f.end <= o.end for o in out):
            continue
        out.append(f)
    return out


def describe(found: list[Leak], text: str | None = None, limit: int = 5) -> str:
    """The places of :func:`leaks` in one line (no secret in it)."""
    if not found:
        return "nothing"
    parts = [f.describe(text) for f in found[:limit]]
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return f"{len(found)} place{'s' if len(found) != 1 else ''}: " + "; ".join(parts) + more


def _mask(text: str, found: list[Leak]) -> str:
    spans: list[list[int]] = []
    for f in sorted(found, key=lambda x: x.start):
        if spans and f.start <= spans[-1][1]:  # overlapping findings become one mask
            spans[-1][1] = max(spans[-1][1], f.end)
        else:
            spans.append([f.start, f.end])
    for a, b in reversed(spans):
        text = text[:a] + MASK + text[b:]
    return text


def redact(text: str) -> str:
    """``text`` with every registered secret, every run of >= MIN_RUN characters of a registered
    secret's secret part, and everything key-shaped replaced by MASK."""
    if not text:
        return text
    return _mask(text, leaks(text, registered()))


def contains_secret(text: str) -> bool:
    return bool(leaks(text or "", registered()))


def scan_files(paths: Iterable[str | os.PathLike[str]], secrets: Iterable[str] | None = None
               ) -> dict[Path, tuple[str, list[Leak]]]:
    """Every file under ``paths`` (files or folders, recursively) that holds a registered secret
    (default: every registered one), a part of one, or anything key-shaped:
    {file: (its text, its leaks)}. Used on meshcert's own outputs (results.json, report.md,
    report.html, saved logs, a junit file) at the end of a session."""
    vals = registered() if secrets is None else list(secrets)
    out: dict[Path, tuple[str, list[Leak]]] = {}
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            files.append(p)
    for f in files:
        try:
            with open(f, "rb") as fh:
                text = fh.read(SCAN_MAX_BYTES).decode("utf-8", errors="replace")
        except OSError:
            continue
        found = leaks(text, vals)
        if found:
            out[f] = (text, found)
    return out


def scrub_file(path: str | os.PathLike[str], text: str, found: list[Leak]) -> None:
    """Rewrite a file :func:`scan_files` found a leak in, every finding masked."""
    Path(path).write_text(_mask(text, found), encoding="utf-8")
