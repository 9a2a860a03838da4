"""Secrets (pre-auth keys, credentials) never reach logs, reports or failure messages.

Every secret meshcert handles is wrapped in :class:`Secret` (whose str/repr is redacted) and
registered, and :func:`redact` scrubs every registered value -- and anything shaped like a
Headscale/Tailscale key -- out of text before it is printed or written.
"""

from __future__ import annotations

import re
import threading

_lock = threading.Lock()
_values: set[str] = set()
KEY_SHAPES = re.compile(r"\b(?:hskey-[A-Za-z0-9_-]+|tskey-[A-Za-z0-9_-]+|[0-9a-f]{48})\b")
MASK = "«redacted»"


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


def redact(text: str) -> str:
    if not text:
        return text
    with _lock:
        vals = sorted(_values, key=len, reverse=True)
    for v in vals:
        if v in text:
            text = text.replace(v, MASK)
    return KEY_SHAPES.sub(MASK, text)


def contains_secret(text: str) -> bool:
    with _lock:
        vals = list(_values)
    return any(v in text for v in vals) or bool(KEY_SHAPES.search(text or ""))
