"""Chaos experiments: steady state -> inject -> assert during the fault -> roll back -> steady state.

A scenario's faults are undone in a ``finally`` (and healed before it starts, so a killed run
leaves nothing injected for the next one); every step is written to a journal that goes into
the report. Faults are applied from the host: toxiproxy toxics / a disabled proxy, nftables in a
container's network namespace (nsenter, the container needs no NET_ADMIN), container kills.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .checks.base import ClauseFailure
from .world.extra import netns_heal, netns_nft


@dataclass
class Journal:
    scenario: str
    t0: float = field(default_factory=time.monotonic)
    events: list[dict] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def log(self, event: str, **detail: Any) -> None:
        self.events.append({"t_s": round(time.monotonic() - self.t0, 3), "event": event, **detail})

    def to_data(self) -> dict:
        return {"scenario": self.scenario, "duration_s": round(time.monotonic() - self.t0, 2),
                "figures": self.figures, "events": self.events}


class Faults:
    """Injected faults of one scenario, undone in reverse order (always)."""

    def __init__(self, world, journal: Journal):
        self.world, self.journal = world, journal
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def toxic(self, proxy: str, kind: str, stream: str = "downstream", **attributes: Any) -> None:
        p = self.world.toxiproxy.client().get_proxy(proxy)
        name = f"meshcert_{kind}_{stream}"
        p.add_toxic(name=name, type=kind, stream=stream, toxicity=1.0, attributes=attributes)
        self.journal.log("inject", fault="toxic", proxy=proxy, kind=kind, stream=stream, attributes=attributes)
        self._undo.append((f"toxic {name} on {proxy}", lambda: p.destroy_toxic(name)))

    def proxy_down(self, proxy: str) -> None:
        p = self.world.toxiproxy.client().get_proxy(proxy)
        p.disable()
        self.journal.log("inject", fault="proxy down", proxy=proxy)
        self._undo.append((f"proxy {proxy} up", p.enable))

    def nft(self, role: str, chains: str, what: str) -> None:
        netns_nft(self.world, role, chains)
        self.journal.log("inject", fault="nftables", netns=role, what=what)
        self._undo.append((f"nftables healed in {role}", lambda: netns_heal(self.world, role)))

    def kill(self, role: str) -> None:
        box = self.world.boxes[role]
        box.container.kill()
        self.journal.log("inject", fault="kill -9", container=role)

        def restart() -> None:
            box.container.reload()
            if box.container.status != "running":
                box.container.start()
        self._undo.append((f"{role} started", restart))

    def undo_all(self) -> None:
        errors = []
        while self._undo:
            what, fn = self._undo.pop()
            try:
                fn()
                self.journal.log("rollback", what=what)
            except Exception as e:  # keep undoing the rest
                errors.append(f"{what}: {e}")
                self.journal.log("rollback failed", what=what, error=str(e))
        if errors:
            raise RuntimeError("rollback incomplete: " + "; ".join(errors))


def heal_everything(world) -> None:
    """Before a scenario: no toxic, every proxy enabled, no fault table in any namespace."""
    world.toxiproxy.reset()  # toxiproxy: removes all toxics and enables every proxy
    roles = [n.name for n in world.topology.nodes] + [f"{p}-pause" for p in world.pods]
    for role in roles:
        if role in world.boxes:
            netns_heal(world, role)  # False when there was nothing to heal


@contextlib.contextmanager
def scenario(world, name: str, report_extra: dict, steady: Callable[[Any], None]) -> Iterator[tuple[Faults, Journal]]:
    """Run a scenario body with its steady-state hypothesis checked before and after.

    The body gets ``(faults, journal)``; faults are undone when it ends, however it ends; the
    world is then waited back into its steady state (``world.reset()`` + the hypothesis).
    """
    journal = Journal(name)
    heal_everything(world)
    try:
        steady(world)
        journal.log("steady state holds (before)")
    except ClauseFailure as e:
        journal.log("steady state broken before the experiment", error=str(e))
        report_extra.setdefault("scenarios", {})[name] = journal.to_data()
        raise
    faults = Faults(world, journal)
    try:
        yield faults, journal
    finally:
        faults.undo_all()
        world.reset()
        try:
            steady(world)
            journal.log("steady state holds (after)")
        finally:
            report_extra.setdefault("scenarios", {})[name] = journal.to_data()
