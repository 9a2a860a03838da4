"""A tailnet node: one container kind of the world (headscale's tsic, in meshcert's terms).
A node container runs tailscaled with a kernel TUN beside meshcert's node agent; an agent pod's
sidecar runs tailscaled alone (kernel TUN, or userspace networking with a SOCKS5 proxy). This
module holds the tailscaled command line and environment both use, how a node container is
started, how any of them joins the tailnet (``tailscale up`` with a key file), and
``TailnetNode``, the handle the checks use: the tailscale CLI, LocalAPI status, its tailnet IP
and its accept-routes pref (see TailnetPeer in interface.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshcert.secrets import Secret
from meshcert.world.base import Box, Launcher, NodeAPI, WorldError, wait_for
from meshcert.world.topology import NodeSpec

# Docker turns IPv6 off in a container on a network without IPv6; a kernel-TUN tailscaled then
# cannot put its tailnet IPv6 address (fd7a:115c:a1e0::/48) on tailscale0, and the nodes' IPv6
# addresses answer nothing. On in every tailnet node and pod namespace (no IPv6 route leaves them:
# our networks carry none).
IPV6_ON = {"net.ipv6.conf.all.disable_ipv6": "0", "net.ipv6.conf.default.disable_ipv6": "0"}
TS_SOCKET = "/var/run/tailscale/tailscaled.sock"
CAPS = {"cap_add": ["NET_ADMIN", "NET_RAW"], "devices": ["/dev/net/tun:/dev/net/tun:rwm"]}
CA_PATH = "/etc/meshcert/ca.pem"


@dataclass
class TailnetNode:
    name: str
    tags: tuple[str, ...]
    ts_box: Box          # where tailscaled and the tailscale CLI run
    api: NodeAPI
    wan_ip: str
    accept_routes: bool
    advertise_routes: tuple[str, ...] = ()
    socks5: str | None = None  # a userspace sidecar: dials from the pod go through this proxy
    up_args: tuple[str, ...] = ()
    _ts_ip: str | None = None

    def tailscale(self, *args: str) -> str:
        code, out = self.ts_box.exec(["tailscale", *args], answer=True)
        if code != 0:
            raise WorldError(f"`tailscale {args[0]}` on {self.name} failed ({code}): {out.strip()[-500:]}")
        return out

    def status(self) -> dict:
        return self.api.status()

    @property
    def ts_ip(self) -> str:
        if not self._ts_ip:
            ips = self.status().get("Self", {}).get("TailscaleIPs") or []
            v4 = [i for i in ips if ":" not in i]
            if not v4:
                raise WorldError(f"{self.name} has no tailnet IPv4 address yet")
            self._ts_ip = v4[0]
        return self._ts_ip

    def backend_state(self) -> str:
        try:
            return self.status().get("BackendState", "?")
        except Exception as e:
            return f"unavailable ({e})"

    def set_accept_routes(self, on: bool) -> None:
        # `tailscale set --accept-routes` as the LocalAPI call the CLI makes (EditPrefs), through
        # the node agent: one HTTP request instead of a docker exec
        self.api.edit_prefs({"RouteAll": on, "RouteAllSet": True})
        self.accept_routes = on
        wait_for(f"{self.name} prefs RouteAll={on}",
                 lambda: self.api.localapi("prefs").get("RouteAll") is on, 15,
                 describe=lambda: f"LocalAPI prefs RouteAll={self.api.localapi('prefs').get('RouteAll')!r}")


def ts_env(name: str) -> dict[str, str]:
    return {"SSL_CERT_FILE": CA_PATH, "TS_NO_LOGS_NO_SUPPORT": "true",
            "TS_DEBUG_FIREWALL_MODE": "nftables", "MESHCERT_NAME": name}


def tailscaled(name: str, userspace: int | None = None) -> str:
    tun = (f"--tun=userspace-networking --socks5-server=127.0.0.1:{userspace} "
           f"--outbound-http-proxy-listen=127.0.0.1:{userspace + 1}") if userspace else "--tun=tailscale0"
    return f"tailscaled --statedir=/var/lib/tailscale --socket={TS_SOCKET} {tun} --port=41641 --no-logs-no-support"


def start_node(run: Launcher, image: str, spec: NodeSpec, ca_pem: bytes, networks: dict[str, Any]) -> Box:
    """A tailnet node container: tailscaled (kernel TUN) + meshcert's node agent, on its first
    network and connected to the others (``networks``: the world's engine networks by name)."""
    banners = ",".join(map(str, spec.banner_ports))
    kw = dict(CAPS, sysctls=dict(IPV6_ON))
    if spec.advertise_routes:
        kw["sysctls"]["net.ipv4.ip_forward"] = "1"
    box = run(spec.name, image,
              ["sh", "-c", f"{tailscaled(spec.name)} & exec python3 /opt/meshcert/world/nodeagent.py "
                           f"--banner '{banners}'"],
              network=spec.networks[0], environment=ts_env(spec.name),
              files={CA_PATH: (ca_pem, 0o644)}, hostname=spec.name, **kw)
    for extra in spec.networks[1:]:
        networks[extra].connect(box.container, aliases=[spec.name])
    return box


def join(node: TailnetNode, key: Secret, login_server: str, accept_dns: bool, up_timeout: str = "90s",
         wait: bool = True) -> None:
    """`tailscale up` on ``node`` with ``key`` (copied in as a file, never on a command line);
    ``wait``: until its BackendState is Running."""
    node.ts_box.put({"/run/meshcert/authkey": (key.reveal().encode(), 0o600)})
    args = ["up", f"--login-server={login_server}", "--auth-key=file:/run/meshcert/authkey",
            f"--hostname={node.name}", f"--accept-dns={'true' if accept_dns else 'false'}",
            f"--accept-routes={'true' if node.accept_routes else 'false'}", f"--timeout={up_timeout}"]
    if node.advertise_routes:
        args.append(f"--advertise-routes={','.join(node.advertise_routes)}")
    node.up_args = tuple(args)
    node.tailscale(*args)
    if wait:
        wait_for(f"{node.name} BackendState Running", lambda: node.backend_state() == "Running", 60,
                 describe=node.backend_state)
