"""The agent pod: one container kind of the world, built the way Kubernetes builds a pod. A pause
container owns the network namespace (its WAN address is the pod's IP); the tailscale sidecar
(kernel TUN, or userspace with a SOCKS5 proxy), the probe (meshcert's node agent: dials from
inside the pod) and the SUT join that namespace and share a volume for tailscaled's socket.
This module starts the pause + sidecar + probe set (``start_pod``) and the SUT container in it
(``start_sut_container``), and holds ``Pod``, the handle on those containers."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass

from meshcert.secrets import Secret
from meshcert.world.base import Box, Launcher
from meshcert.world.node import CA_PATH, CAPS, IPV6_ON, TS_SOCKET, tailscaled, ts_env
from meshcert.world.topology import AgentSpec

SECRET_PATH = "/run/secrets/meshcert/authkey"  # the pod's auth key, mounted as a Kubernetes Secret volume is


@dataclass
class Pod:
    """A Kubernetes-like pod: the pause container owns the network namespace; the others join it."""
    spec: AgentSpec
    pause: Box
    sidecar: Box
    probe: Box
    socket_volume: str
    netns: dict
    mount: dict
    ip: str = ""
    sut: Box | None = None
    sut_config: tuple = ("", True, ())  # (mutant, with_secret, extra env): reset() restores the default


def start_pod(run: Launcher, create_volume: Callable[[str], str], a: AgentSpec, ts_img: str, host_img: str,
              ca_pem: bytes) -> Pod:
    """pause (owns the netns) + tailscale sidecar + probe, sharing the socket volume
    (``create_volume(role)`` makes the run's labelled volume and returns its engine name)."""
    ca_file = {CA_PATH: (ca_pem, 0o644)}
    vol_name = create_volume(f"{a.name}-tailscale-socket")
    pause = run(f"{a.name}-pause", host_img, ["sleep", "infinity"], network="wan",
                aliases=[a.name], hostname=a.name, sysctls=dict(IPV6_ON))
    netns = {"network_mode": f"container:{pause.container.id}"}
    mount = {"volumes": {vol_name: {"bind": "/var/run/tailscale", "mode": "rw"}}}

    def start_sidecar() -> Box:
        if a.userspace:
            return run(f"{a.name}-tailscale", ts_img,
                       ["sh", "-c", f"exec {tailscaled(a.name, userspace=a.socks5_port)}"],
                       environment=ts_env(a.name), files=ca_file, **netns, **mount)
        return run(f"{a.name}-tailscale", ts_img, ["sh", "-c", f"exec {tailscaled(a.name)}"],
                   environment=ts_env(a.name), files=ca_file, **CAPS, **netns, **mount)

    def start_probe() -> Box:
        return run(f"{a.name}-probe", host_img,
                   ["python3", "/opt/meshcert/world/nodeagent.py", "--banner", ",".join(map(str, a.banner_ports))],
                   environment={"MESHCERT_NAME": a.name}, **netns, **mount)
    # the sidecar and the probe need only the pause container's namespace: both at once
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        f_sidecar, f_probe = ex.submit(start_sidecar), ex.submit(start_probe)
        sidecar, probe = f_sidecar.result(), f_probe.result()
    return Pod(a, pause, sidecar, probe, vol_name, netns, mount)


def start_sut_container(run: Launcher, pod_name: str, pod: Pod, image: str, command: list[str] | None,
                        sut_port: int, mutant: str, key: Secret | None, extra_env: dict[str, str] | None) -> Box:
    """The SUT container of ``pod``, joined to its network namespace and socket volume. ``key``:
    the pod's auth key, mounted as a file (as a Kubernetes Secret volume is); None: no secret.
    Userspace pods get SUT_PROXY pointing at the sidecar's SOCKS5."""
    env = {"SUT_PORT": str(sut_port), "TS_SOCKET": TS_SOCKET, "SUT_MUTANT": mutant}
    if pod.spec.userspace:
        env["SUT_PROXY"] = f"socks5://127.0.0.1:{pod.spec.socks5_port}"
    files = {}
    if key is not None:
        env["TS_AUTHKEY_FILE"] = SECRET_PATH
        files[SECRET_PATH] = (key.reveal().encode(), 0o400)
    env.update(extra_env or {})
    return run(f"{pod_name}-sut", image, command, environment=env, files=files, **pod.netns, **pod.mount)
