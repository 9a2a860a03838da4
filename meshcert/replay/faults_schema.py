"""The fault kinds as data: each kind's name, parameters (with their types) and what it does.

A fault is ``{kind: NAME, ...params}`` in a chaos scenario and in a replay file's ``faults``
section. This module says which kinds exist and what each takes, so a replay file can be
checked without a world; the handlers that apply a fault to a world are
:data:`meshcert.chaos.faults.FAULTS` (one per kind named here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshcert.errors import InputError

ParamType = type | tuple[type, ...]


@dataclass(frozen=True)
class FaultParams:
    required: Mapping[str, ParamType]
    optional: Mapping[str, ParamType]
    doc: str


_STR = str
_NUM = (int, float)
FAULT_KINDS: dict[str, FaultParams] = {
    "toxic": FaultParams({"proxy": _STR, "type": _STR}, {"stream": _STR, "attributes": dict},
                         "a toxiproxy toxic (latency, timeout, reset_peer, ...) on a proxy, one stream"),
    "proxy_down": FaultParams({"proxy": _STR}, {}, "a toxiproxy proxy disabled (refuses connections)"),
    "nft": FaultParams({"netns": _STR, "rules": _STR}, {},
                       "nftables chains loaded into a container's network namespace"),
    "kill": FaultParams({"container": _STR}, {}, "kill -9 of a container; the undo starts it again"),
    "freeze": FaultParams({"container": _STR}, {}, "a container frozen (docker pause); the undo thaws it"),
    "standby_router": FaultParams({"name": _STR}, {"approve": bool, "advertise": list, "networks": list},
                                  "a second subnet router advertising the VLAN (approved unless approve: false)"),
    "extra_pod": FaultParams({"name": _STR}, {"key": _STR},
                             "an extra agent pod; key: valid | expired-preauth-key | expired-node"),
    "router_rejoined": FaultParams({"router": _STR}, {},
                                   "the subnet router removed and joined again, its routes then approved straight "
                                   "through headscale as the guide's operator does (no policy change after it); "
                                   "the undo approves them through the world (with its full map on headscale < 0.26, "
                                   "after a restart of headscale on 0.26-0.27, where the deleted router stays primary)"),
    "control_blip": FaultParams({"seconds": _NUM}, {"hold_s": _NUM},
                                "the control plane unreachable for `seconds` (toxiproxy's control proxy disabled: "
                                "sessions cut, connections refused), then reachable again; the probes start "
                                "`hold_s` after the cut (default 12: past headscale's 10 s reconnect grace). The "
                                "undo waits for the routes and every peer online, and restarts headscale if they "
                                "do not come back"),
}
EXTRA_POD_KEYS = ("valid", "expired-preauth-key", "expired-node")
# control_blip's default hold: headscale (v0.27.1 hscontrol/poll.go) takes a map session that ended
# for gone after 10 one-second ticks without a new one, then marks the node offline and clears its
# primary routes; 12 s after the cut that decision has been made for every cut session
CONTROL_GRACE_S = 12.0


def validate_fault(f: Any, source: str, path: str,
                   kinds: Mapping[str, Any] = FAULT_KINDS) -> None:
    """One clear error naming the file, the fault and the parameter. ``kinds``: the kinds
    accepted, each with ``required``, ``optional`` and ``doc`` (a :class:`FaultParams`, or a
    chaos ``FaultKind``, which adds its handler); default: every kind of meshcert."""
    if not isinstance(f, dict):
        raise InputError(source, f"{path}: expected a mapping {{kind: NAME, ...}}")
    kind = f.get("kind")
    if kind not in kinds:
        raise InputError(source, f"{path}.kind: unknown fault kind {kind!r}", f"use one of {', '.join(kinds)}")
    fk = kinds[kind]
    for k in fk.required:
        if k not in f:
            raise InputError(source, f"{path}: fault {kind} needs {k}", f"{kind}: {fk.doc}")
    for k, v in f.items():
        if k == "kind":
            continue
        want = fk.required.get(k) or fk.optional.get(k)
        if want is None:
            raise InputError(source, f"{path}.{k}: not a parameter of fault {kind}",
                             f"its parameters: {', '.join([*fk.required, *fk.optional])}")
        if not isinstance(v, want) or (isinstance(v, bool) and want is not bool):
            raise InputError(source, f"{path}.{k}: expected {getattr(want, '__name__', 'a number')}, found {v!r}")
    if kind == "extra_pod" and f.get("key", "valid") not in EXTRA_POD_KEYS:
        raise InputError(source, f"{path}.key: {f['key']!r}", f"use one of {', '.join(EXTRA_POD_KEYS)}")
    if kind == "control_blip":
        seconds, hold = f["seconds"], f.get("hold_s", CONTROL_GRACE_S)
        if not 0 < seconds <= 60:
            raise InputError(source, f"{path}.seconds: {seconds!r}", "an outage of more than 0 and at most 60 seconds")
        if not seconds <= hold <= 120:
            raise InputError(source, f"{path}.hold_s: {hold!r}",
                             f"at least the outage ({seconds!r} s) and at most 120 seconds after the cut")
    if kind == "toxic" and f.get("stream", "downstream") not in ("downstream", "upstream"):
        raise InputError(source, f"{path}.stream: {f['stream']!r}", "use downstream or upstream")
