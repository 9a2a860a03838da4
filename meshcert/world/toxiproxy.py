"""The toxiproxy server: one container kind of the world. It sits on the WAN network under the
alias the nodes use for the control server (``control``) and forwards it to headscale, so a
test can cut or slow the control plane without touching headscale. ``Toxiproxy`` is the handle:
a toxiproxy-python client pointed at this container, its health, and the proxies it holds."""

from __future__ import annotations

from toxiproxy import Toxiproxy as ToxiproxyAPI

from meshcert.world.base import Box, Launcher

TOXI_API = 8474


class Toxiproxy:
    """The toxiproxy server container, driven by toxiproxy-python (module-level client state)."""

    def __init__(self, box: Box, ip: str):
        self.box = box
        self.ip = ip

    def client(self) -> ToxiproxyAPI:
        t = ToxiproxyAPI()
        t.update_api_consumer(self.ip, TOXI_API)
        return t

    def running(self) -> bool:
        try:
            return bool(self.client().running())
        except Exception:
            return False

    def ensure_proxy(self, name: str, listen: str, upstream: str):
        t = self.client()
        existing = t.get_proxy(name)
        if existing is not None:
            return existing
        return t.create(upstream=upstream, name=name, listen=listen, enabled=True)

    def reset(self) -> None:
        self.client().reset()


def start_toxiproxy(run: Launcher, image: str, alias: str) -> Box:
    """The toxiproxy server on the WAN network, reachable as ``alias`` (the control server's name)."""
    return run("toxiproxy", image, ["toxiproxy-server", "-host", "0.0.0.0", "-port", str(TOXI_API)],
               network="wan", aliases=[alias])
