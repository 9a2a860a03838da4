"""The composition: ``World`` builds the running world from a
:class:`~meshcert.world.topology.Topology` out of the container kinds (headscale.py,
toxiproxy.py, node.py, pod.py, host.py), and offers the operations the checks call (policy,
route approvals, pods and nodes added for one test, sidecar faults, dials, addresses, logs).
Every container, network and volume carries the run's labels (see labels.py). State changes
(policy, routes, prefs) are made exactly once and then waited for by polling the real
distributed state -- never by sleeping. The surface the checks may use is ``WorldAPI`` in
interface.py."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import os
import secrets as pysecrets
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from testcontainers.core.container import DockerContainer

from meshcert.policy import parse_policy
from meshcert.secrets import Secret, redact
from meshcert.sut.client import SutClient, require_image, wait_serving
from meshcert.toolchain import components, engine, images, progress
from meshcert.world import labels as lbl
from meshcert.world.base import (
    Box,
    NodeAPI,
    WorldError,
    container_state,
    http_state,
    wait_for,
)
from meshcert.world.ca import make_certs
from meshcert.world.headscale import (
    CONTROL_ALIAS,
    HEADSCALE_ALIAS,
    HEADSCALE_PORT,
    MAGIC_DNS_BASE,
    Headscale,
    login_server,
    start_headscale,
)
from meshcert.world.host import start_host
from meshcert.world.isolation import check_isolation
from meshcert.world.node import TS_SOCKET, TailnetNode, join, start_node
from meshcert.world.pod import SECRET_PATH, Pod, start_pod, start_sut_container
from meshcert.world.targets import start_sshd_host, start_target_node
from meshcert.world.topology import AgentSpec, HostSpec, NodeSpec, Topology, guide_topology, with_tailscale
from meshcert.world.toxiproxy import TOXI_API, Toxiproxy, start_toxiproxy

SENTINEL_SRC = "192.0.2.1/32"  # TEST-NET-1: never a packet, only a marker in the policy
SENTINEL_PORTS = (64600, 65000)


@dataclass
class World:
    topology: Topology = field(default_factory=guide_topology)
    run_id: str = field(default_factory=lambda: "mc" + pysecrets.token_hex(3))
    sut_image: str | None = None   # None: the bundled reference SUT
    sut_port: int = 8080

    def __post_init__(self) -> None:
        self.client: docker.DockerClient | None = None
        self.boxes: dict[str, Box] = {}
        self.networks: dict[str, Any] = {}
        self.volumes: list[Any] = []
        self.nodes: dict[str, TailnetNode] = {}
        self.pods: dict[str, Pod] = {}
        self.hosts: dict[str, NodeAPI] = {}
        self.host_addresses: dict[str, str] = {}
        self.headscale: Headscale | None = None
        self.toxiproxy: Toxiproxy | None = None
        self.keys: dict[tuple[str, ...], Secret] = {}
        self._keys_lock = threading.Lock()
        self.policy: dict = {}
        self.policy_version = 0
        self.images: dict[str, str] = {}
        self.certs = make_certs(self.run_id, [HEADSCALE_ALIAS, CONTROL_ALIAS, "localhost"])
        self.timings: dict[str, float] = {}
        self.beside: Any = None  # what start(beside=...) started beside the nodes (e.g. Vault)
        # pod -> (env, files) every SUT of the pod starts with (set_sut_standing)
        self.sut_standing: dict[str, tuple[dict[str, str], dict[str, tuple[bytes, int]]]] = {}
        self.user_id: int | None = None
        self.log_root: Path | None = None  # where failing clauses save container logs (set by the plugin)
        self.connectivity_spec: dict | None = None  # a user's spec.connectivity (certify --spec), else the guide's
        self._failures = 0

    # ---------------------------------------------------------------- building
    def labels(self) -> dict[str, str]:
        """The labels every object of this run carries (the sweeper finds leftovers by them)."""
        return lbl.labels(self.run_id)

    def ip_of(self, box: Box, network: str) -> str:
        """``box``'s address on the topology network ``network``."""
        return box.ip(self.networks[network].name)

    def container_name(self, role: str) -> str:
        """The engine name of this run's object for ``role`` (container, network or volume)."""
        return f"mc-{self.run_id}-{role}"

    def run_container(self, role: str, image: str, command: list[str] | None, *, network: str | None = None,
                      aliases: list[str] | None = None, files: dict[str, tuple[bytes, int]] | None = None,
                      **kwargs: Any) -> Box:
        """The launcher (base.Launcher): start one labelled container of this run and keep its Box."""
        name = self.container_name(role)
        dc = DockerContainer(image).with_name(name).with_command(command)
        for k, v in (kwargs.pop("environment", None) or {}).items():
            dc.with_env(k, v)
        for vol, spec in (kwargs.pop("volumes", None) or {}).items():
            dc.with_volume_mapping(vol, spec["bind"], spec["mode"])
        for path, (data, mode) in (files or {}).items():  # copied in after create, before start
            dc.with_copy_into_container(data, path, mode)
        kw: dict[str, Any] = {"labels": self.labels(), "hostname": kwargs.pop("hostname", role)
                              if "network_mode" not in kwargs else None}
        if kw["hostname"] is None:
            del kw["hostname"]
        if network:
            kw["network"] = self.networks[network].name
            kw["networking_config"] = {self.networks[network].name: self.client.api.create_endpoint_config(
                aliases=aliases or [role], **({"ipv4_address": kwargs.pop("ipv4_address")}
                                              if "ipv4_address" in kwargs else {}))}
        else:
            kw["network"] = None
        kw.update(kwargs)
        dc.with_kwargs(**kw)
        try:
            dc.start()
        except docker.errors.APIError as e:
            raise WorldError(f"could not start container {name} ({image}): {e.explanation or e}") from None
        box = Box(name, dc.get_wrapped_container(), role)
        self.boxes[role] = box
        return box

    def start(self, beside: Callable[[World], Any] | None = None) -> World:
        """Build and start the world; every node Running, converged and policy-synced.

        ``beside``: more of the world's own containers (Vault: world/credentials.py
        ``start_vault_beside``), started in a thread of their own as soon as the world's networks
        exist, while the nodes start and join; its result is kept in ``self.beside``. The world is
        ready only when it has returned too (its error fails the start, and the world is removed)."""
        t0 = time.monotonic()
        self.client = engine.ensure_engine()
        lbl.sweep(self.client)
        self.images = images.ensure_images(
            self.client, ("host", "tailscale", "headscale", "toxiproxy") + (() if self.sut_image else ("sut-reference",))
            + tuple(sorted({images.versioned("tailscale", s.tailscale or self.topology.tailscale)
                            for s in (*self.topology.nodes, *self.topology.pods)}))
            + ((images.versioned("headscale", self.topology.headscale),) if self.topology.headscale else ())
            + tuple(sorted(({s.image for s in self.topology.nodes} | {h.image for h in self.topology.hosts})
                           - {"tailscale", "host"})))
        if self.sut_image:
            require_image(self.client, self.sut_image)  # SutNotTestable naming the image and how to load it
        check_isolation(self.client, self.images["host"])
        self.timings["images"] = time.monotonic() - t0
        try:
            self._build(beside)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        return self

    def _build(self, beside: Callable[[World], Any] | None = None) -> None:
        c = self.client
        topo = self.topology
        t = time.monotonic()
        for net in topo.networks:
            ipam = None
            if net.subnet:
                ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=net.subnet)])
            try:
                self.networks[net.name] = c.networks.create(
                    self.container_name(net.name), driver="bridge", internal=True, labels=self.labels(), ipam=ipam)
            except docker.errors.APIError as e:
                raise WorldError(f"could not create network {net.name} ({net.subnet or 'auto'}): {e.explanation}",
                                 "a leftover network may hold the subnet: run `meshcert sweep`") from None

        if beside is None:
            self._build_nodes(t)
            return
        side = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="beside")
        t_side = time.monotonic()

        def timed() -> Any:
            try:
                return beside(self)
            finally:
                self.timings["beside"] = time.monotonic() - t_side
        f_side = side.submit(timed)
        try:
            self._build_nodes(t)
            t_wait = time.monotonic()
            self.beside = f_side.result()
            self.timings["beside_wait"] = time.monotonic() - t_wait  # how long the world waited for it
        finally:
            side.shutdown(wait=True)  # never removing the world while it still starts containers

    def _build_nodes(self, t: float) -> None:
        """The world's own containers (``t``: when its start began, for its "containers" phase)."""
        topo = self.topology
        with progress.step(f"world {self.run_id}: starting containers"):
            with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
                f_hs = ex.submit(start_headscale, self.run_container,
                                 self.images[images.versioned("headscale", topo.headscale)], self.certs)
                f_tp = ex.submit(start_toxiproxy, self.run_container, self.images["toxiproxy"], CONTROL_ALIAS)
                f_nodes = {s.name: ex.submit(self._start_node, s) for s in topo.nodes}
                f_hosts = {s.name: ex.submit(self._start_host, s) for s in topo.hosts}
                f_pods = {a.name: ex.submit(self._start_pod, a) for a in topo.pods}
                hs_box, tp_box = f_hs.result(), f_tp.result()
                node_boxes = {n: f.result() for n, f in f_nodes.items()}
                host_boxes = {n: f.result() for n, f in f_hosts.items()}
                self.pods = {n: f.result() for n, f in f_pods.items()}
        self.timings["containers"] = time.monotonic() - t

        self.headscale = Headscale(hs_box, self.ip_of(hs_box, "wan"),
                                   topo.headscale or components.COMPONENTS["headscale"].version)
        self.toxiproxy = Toxiproxy(tp_box, self.ip_of(tp_box, "wan"))
        for spec in topo.nodes:
            box = node_boxes[spec.name]
            self.nodes[spec.name] = TailnetNode(spec.name, spec.tags, box, NodeAPI(spec.name, self.ip_of(box, "wan")),
                                                self.ip_of(box, "wan"), spec.accept_routes, spec.advertise_routes)
        for pod in self.pods.values():
            a = pod.spec
            pod.ip = self.ip_of(pod.pause, "wan")
            self.nodes[a.name] = TailnetNode(a.name, a.tags, pod.sidecar, NodeAPI(a.name, pod.ip), pod.ip,
                                             a.accept_routes,
                                             socks5=f"127.0.0.1:{a.socks5_port}" if a.userspace else None)
        for spec in topo.hosts:
            self.hosts[spec.name] = NodeAPI(spec.name, self.ip_of(host_boxes[spec.name], spec.network))
            self.host_addresses[spec.name] = spec.address

        t = time.monotonic()
        wait_for("headscale /health over TLS", lambda: self.headscale.healthy(self.certs.ca_pem), 60,
                 describe=lambda: f"GET /health: {self.headscale.health_state(self.certs.ca_pem)}; "
                                  f"{container_state(hs_box, 8)}")
        wait_for("toxiproxy API", self.toxiproxy.running, 30,
                 describe=lambda: f"GET /version: {http_state(f'http://{self.toxiproxy.ip}:{TOXI_API}/version')}; "
                                  f"{container_state(tp_box)}")
        self.toxiproxy.ensure_proxy("control", f"0.0.0.0:{HEADSCALE_PORT}", f"{HEADSCALE_ALIAS}:{HEADSCALE_PORT}")
        self.user_id = self.headscale.create_user(topo.user)
        self.headscale.enable_api(self.certs.ca_pem)
        self._apply_policy(topo.policy, wait=False)
        self.timings["control"] = time.monotonic() - t

        t = time.monotonic()
        for node in self.nodes.values():
            wait_for(f"node agent on {node.name}", node.api.healthy, 30,
                     describe=lambda n=node: self._agent_state(n))
        # the SUT containers start while the nodes join (as a pod's containers start together)
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
            suts = [ex.submit(self.start_sut, p.spec.name) for p in self.pods.values()]
            list(ex.map(self._join, self.nodes.values()))
            self.timings["join"] = time.monotonic() - t
            for f in suts:
                f.result()
        self.timings["suts"] = time.monotonic() - t

        t = time.monotonic()
        self._approve_routes()
        self._wait_policy_everywhere()
        self.wait_mesh()
        self.timings["converge"] = time.monotonic() - t

    def _start_host(self, spec: HostSpec) -> Box:
        if spec.image != "host":  # a credential target: sshd beside the node agent (targets.py)
            return start_sshd_host(self.run_container, self.images[spec.image], spec)
        return start_host(self.run_container, self.images["host"], spec)

    def _start_node(self, spec: NodeSpec) -> Box:
        if spec.image != "tailscale":  # a credential target: sshd or PostgreSQL beside tailscaled (targets.py)
            if spec.tailscale or self.topology.tailscale:
                raise WorldError(f"node {spec.name}: credential targets run the pinned tailscale only "
                                 f"(their image {spec.image!r} is built on it), not {spec.tailscale or self.topology.tailscale}")
            return start_target_node(self.run_container, self.images[spec.image], spec, self.certs.ca_pem,
                                     self.networks)
        return start_node(self.run_container, self._tailscale_image(spec.tailscale), spec, self.certs.ca_pem,
                          self.networks)

    def _tailscale_image(self, version: str | None) -> str:
        """The tailscale image of ``version`` (None: the topology's default, else the pinned one),
        built now if a pod added for one test asks for a version the world did not start with."""
        name = images.versioned("tailscale", version or self.topology.tailscale)
        if name not in self.images:
            self.images.update(images.ensure_images(self.client, (name,)))
        return self.images[name]

    def _create_volume(self, role: str) -> str:
        """A labelled volume of this run (removed by stop() with the rest); returns its engine name."""
        vol = self.client.volumes.create(self.container_name(role), labels=self.labels())
        self.volumes.append(vol)
        return vol.name

    def _start_pod(self, a: AgentSpec) -> Pod:
        return start_pod(self.run_container, self._create_volume, a, self._tailscale_image(a.tailscale),
                         self.images["host"], self.certs.ca_pem)

    def add_pod(self, spec: AgentSpec, key: Secret | None = None, *, expect_join: bool = True, mutant: str = "",
                up_timeout: str = "90s") -> TailnetNode:
        """An extra agent pod for one test, joined with ``key`` (default: a key for its tags).
        ``expect_join=False``: `tailscale up` may fail (an expired key); nothing is waited for.
        ``up_timeout``: its `tailscale up --timeout` (a WorldError when it has not joined by then)."""
        pod = self._start_pod(spec)
        self.pods[spec.name] = pod
        pod.ip = self.ip_of(pod.pause, "wan")
        node = TailnetNode(spec.name, spec.tags, pod.sidecar, NodeAPI(spec.name, pod.ip), pod.ip, spec.accept_routes,
                           socks5=f"127.0.0.1:{spec.socks5_port}" if spec.userspace else None)
        self.nodes[spec.name] = node
        wait_for(f"node agent on {spec.name}", node.api.healthy, 30, describe=lambda: self._agent_state(node))

        def join() -> None:
            if expect_join:
                self._join(node, key, up_timeout=up_timeout)
            else:
                try:
                    self._join(node, key, up_timeout="15s", wait=False)
                except WorldError:
                    pass
        # the SUT container starts while the sidecar joins, as a pod's containers start together
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
            f_join = ex.submit(join)
            f_sut = ex.submit(self.start_sut, spec.name, key=key, mutant=mutant)
            f_join.result()
            f_sut.result()
        return node

    def remove_pod(self, name: str) -> None:
        pod = self.pods.pop(name, None)
        self._forget(name, (f"{name}-sut", f"{name}-probe", f"{name}-tailscale", f"{name}-pause"))
        try:
            if pod is not None:
                self.client.volumes.get(pod.socket_volume).remove(force=True)
        except docker.errors.NotFound:
            pass

    def add_node(self, spec: NodeSpec) -> TailnetNode:
        """An extra tailnet node for one test (e.g. a standby subnet router): started, joined, and
        its ``approve_routes`` approved. Undo with :meth:`remove_node`."""
        box = self._start_node(spec)
        ip = self.ip_of(box, "wan")
        node = TailnetNode(spec.name, spec.tags, box, NodeAPI(spec.name, ip), ip, spec.accept_routes,
                           spec.advertise_routes)
        self.nodes[spec.name] = node
        wait_for(f"node agent on {spec.name}", node.api.healthy, 30, describe=lambda: self._agent_state(node))
        self._join(node)
        if spec.approve_routes:
            self._approve_advertised(spec)
        return node

    def remove_node(self, name: str) -> None:
        self._forget(name, (name,))

    def switch_tailscale(self, version: str) -> None:
        """The version matrix (issue 14): this world's nodes and pods on tailscale ``version``,
        the rest kept (networks, headscale and its users, keys and policy, toxiproxy, the VLAN
        hosts, images). Only the nodes restart: each node and pod is removed (its containers
        and its headscale node) and started again on that version's image, joined, its routes
        approved; then the world waits for its steady state (routes seen, policy everywhere)."""
        t = time.monotonic()
        mutants = {name: pod.sut_config[0] for name, pod in self.pods.items()}
        node_specs, pod_specs = list(self.topology.nodes), list(self.topology.pods)
        self.topology = with_tailscale(self.topology, {"*": version})
        with progress.step(f"world {self.run_id}: nodes and pods to tailscale {version}"):
            with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
                list(ex.map(self.remove_node, [s.name for s in node_specs]))
                list(ex.map(self.remove_pod, [a.name for a in pod_specs]))
            with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
                nodes = [ex.submit(self.add_node, s) for s in self.topology.nodes]
                pods = [ex.submit(lambda a: self.add_pod(a, mutant=mutants.get(a.name, "")), a)
                        for a in self.topology.pods]
                for f in (*nodes, *pods):
                    f.result()
            self._after_route_change()
            self.wait_routes_seen()
            self._wait_policy_everywhere()
        self.timings[f"switch to tailscale {version}"] = time.monotonic() - t

    def restart_node(self, name: str) -> None:
        """Start a stopped or killed node container again (its tailscaled state is kept in the
        container) and wait until it is Running; its WAN address is read again (the engine may
        give another one)."""
        node = self.nodes[name]
        box = node.ts_box
        box.container.reload()
        if box.container.status != "running":
            box.container.start()
            box.container.reload()
        node.wan_ip = self.ip_of(box, "wan")
        node.api = NodeAPI(name, node.wan_ip)
        wait_for(f"node agent on {name} after its restart", node.api.healthy, 30,
                 describe=lambda: self._agent_state(node))
        wait_for(f"{name} BackendState Running after its restart", lambda: node.backend_state() == "Running", 60,
                 describe=node.backend_state)

    def _agent_state(self, node: TailnetNode) -> str:
        """For a wait on a node agent: what its /health answers and its container (a pod's probe)."""
        pod = self.pods.get(node.name)
        box = pod.probe if pod is not None and pod.sidecar is node.ts_box else node.ts_box
        return f"GET /health: {http_state(node.api.base + '/health')}; {container_state(box)}"

    def _forget(self, name: str, roles: Iterable[str]) -> None:
        """Remove a node's containers and delete it from headscale (if it ever registered)."""
        self.nodes.pop(name, None)
        boxes = [b for b in (self.boxes.pop(role, None) for role in roles) if b is not None]

        def remove(box: Box) -> None:
            try:
                box.container.remove(force=True)
            except docker.errors.NotFound:
                pass
        # all at once (a pod's four containers one after another took ~5 s on the loaded engine);
        # the containers go before the headscale node, so no tailscaled is left to register again
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(boxes))) as ex:
            list(ex.map(remove, boxes))
        try:
            self.headscale.cli("nodes", "delete", "-i", str(self.headscale.node_id(name)), "--force")
        except WorldError:
            pass  # it never registered

    def key_for(self, tags: tuple[str, ...]) -> Secret:
        """The run's reusable pre-auth key for ``tags`` (made once, then reused)."""
        k = tuple(sorted(tags))
        with self._keys_lock:  # joins and SUT starts run in threads: one key per tag set, never two
            if k not in self.keys:
                self.keys[k] = self.headscale.preauth_key(k, reusable=True, expiration="2h")
            return self.keys[k]

    def login_server(self) -> str:
        return login_server()

    def _join(self, node: TailnetNode, key: Secret | None = None, up_timeout: str = "90s", wait: bool = True) -> None:
        key = key or self.key_for(node.tags)
        # An agent pod's resolver is its sidecar's (a TUN sidecar writes the pod's resolv.conf:
        # 100.100.100.100, which answers MagicDNS names and forwards the rest to the engine's DNS),
        # so its tools can dial tailnet names; in userspace mode tailscaled configures no OS DNS
        # and names go to its SOCKS5 proxy. Other nodes keep the engine's resolver untouched.
        accept_dns = node.name in self.pods
        join(node, key, self.login_server(), accept_dns, up_timeout=up_timeout, wait=wait)

    def _approve_routes(self) -> None:
        for spec in self.topology.nodes:
            if spec.approve_routes:
                self._approve_advertised(spec)
        self._after_route_change()
        self.wait_routes_seen()

    def _after_route_change(self) -> None:
        """Headscale < 0.26 sends a router no new peers when its route is enabled, so the route
        carries nothing until the router's next full map (measured on v0.25.1: unreachable for
        30 s, reachable 5 s after a policy change; the finding is kept in fixtures/). The world
        then follows each approval change with a policy change (every node gets a full map),
        so the clauses about the SUT see the route working; ROUTE-3 runs the guide's own
        commands without this and asserts the route works."""
        if self.headscale.dialect.route_change_needs_full_map:
            self._apply_policy(self.policy or self.topology.policy)

    def _approve_advertised(self, spec) -> None:
        """Wait until headscale sees ``spec``'s node advertise its routes, then approve them."""
        hs = self.headscale

        def advertised() -> dict | None:
            for r in hs.routes():
                if r.get("given_name", r.get("name")) == spec.name and \
                        set(spec.approve_routes) <= set(r.get("available_routes") or []):
                    return r
            return None
        r = wait_for(f"headscale to see {spec.name} advertise {spec.approve_routes}", advertised, 30,
                     describe=lambda: "headscale routes: " + json.dumps(
                         [{k: r.get(k) for k in ("given_name", "name", "available_routes", "approved_routes")
                           if k in r} for r in hs.routes()]))
        hs.approve_routes(int(r["id"]), spec.approve_routes)

    def expected_primary_routes(self) -> dict[str, set[str]]:
        return {s.name: set(s.approve_routes) for s in self.topology.nodes if s.approve_routes}

    def wait_routes_seen(self, expected: dict[str, set[str]] | None = None, timeout: float = 30) -> None:
        """Wait until every node with accept_routes sees exactly ``expected`` primary routes per router."""
        expected = self.expected_primary_routes() if expected is None else expected
        for node in self.nodes.values():
            if not node.accept_routes:
                continue
            def seen(node=node) -> dict[str, set[str]]:
                peers = node.status().get("Peer") or {}
                return {p.get("HostName"): set(p.get("PrimaryRoutes") or []) for p in peers.values()
                        if p.get("HostName") in expected}
            wait_for(f"{node.name} to see primary routes {expected}",
                     lambda: all(seen().get(r, set()) == cidrs for r, cidrs in expected.items()), timeout,
                     describe=lambda: f"primary routes seen: { {r: sorted(c) for r, c in seen().items()} }")

    # ---------------------------------------------------------------- policy
    def _apply_policy(self, policy: dict, wait: bool = True) -> None:
        self.policy_version += 1
        lo, hi = SENTINEL_PORTS
        sentinel_port = lo + self.policy_version % (hi - lo)
        doc = json.loads(json.dumps(policy))
        doc.setdefault("acls", []).append(
            {"action": "accept", "src": [SENTINEL_SRC], "dst": [f"*:{sentinel_port}"]})
        self.headscale.set_policy_text(json.dumps(doc, indent=2))
        self.policy = policy
        self._sentinel = sentinel_port
        if wait:
            self._wait_policy_everywhere()

    def set_policy(self, policy: dict) -> None:
        """Set the policy live (database mode) and wait until every node's packet filter reflects it."""
        parse_policy(json.dumps(policy), "world policy")  # one clear error for a malformed policy
        self._apply_policy(policy, wait=True)

    def _wait_policy_everywhere(self, timeout: float = 30) -> None:
        port = self._sentinel
        def has(node: TailnetNode) -> bool:
            for rule in node.api.filter_rules():
                for dp in rule.get("DstPorts") or []:
                    ports = dp.get("Ports") or {}
                    if ports.get("First") == port and ports.get("Last") == port:
                        return True
            return False
        # every node at once, polled every 50 ms: the filter lands within one of headscale's
        # batches (tuning.batch_change_delay, 50 ms) and the wait should end when it does
        nodes = list(self.nodes.values())
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(nodes))) as ex:
            list(ex.map(lambda n: wait_for(f"policy v{self.policy_version} in {n.name}'s packet filter",
                                           lambda: has(n), timeout, interval=0.05,
                                           describe=lambda: f"{len(n.api.filter_rules())} packet filter rule(s), "
                                                            f"none for the policy's sentinel port {port}"), nodes))

    # ---------------------------------------------------------------- mesh state
    def wait_mesh(self, timeout: float = 60) -> None:
        """Every node Running and seeing every peer the policy lets it talk to online."""
        for node in self.nodes.values():
            def online(node=node) -> bool:
                st = node.status()
                peers = st.get("Peer") or {}
                return st.get("BackendState") == "Running" and all(p.get("Online") for p in peers.values())
            wait_for(f"{node.name} Running with all peers online", online, timeout,
                     describe=lambda n=node: (lambda st: f"BackendState {st.get('BackendState')!r}, peers online: "
                                              + json.dumps({p.get('HostName'): p.get('Online') for p in
                                                            (st.get('Peer') or {}).values()}))(n.status()))

    def address(self, name: str) -> str:
        """The address a probe dials for a node (its tailnet IPv4) or a plain host (its VLAN address)."""
        if name in self.nodes:
            return self.nodes[name].ts_ip
        if name in self.host_addresses:
            return self.host_addresses[name]
        raise KeyError(name)

    def address6(self, name: str) -> str:
        """A tailnet node's IPv6 address (headscale gives each node one from fd7a:115c:a1e0::/48)."""
        ips = (self.nodes[name].status().get("Self") or {}).get("TailscaleIPs") or []
        v6 = [i for i in ips if ":" in i]
        if not v6:
            raise WorldError(f"{name} has no tailnet IPv6 address (its TailscaleIPs: {ips})")
        return v6[0]

    def dns_name(self, name: str) -> str:
        """A tailnet node's MagicDNS name, <hostname>.<base_domain> (as its own status gives it, no final dot)."""
        dns = ((self.nodes[name].status().get("Self") or {}).get("DNSName") or "").rstrip(".")
        if not dns.endswith("." + MAGIC_DNS_BASE):
            raise WorldError(f"{name}'s MagicDNS name {dns!r} is not under the world's base domain {MAGIC_DNS_BASE}")
        return dns

    def refused_target(self) -> tuple[str, int]:
        """An address and port the policy lets the agent reach where nothing listens, so a dial is
        refused (a RST), not dropped: the first subnet router's own VLAN address, port 22 (the
        guide's policy allows the VLAN on 22; a router serves no banner)."""
        router = next(s for s in self.topology.nodes if s.advertise_routes and "vlan" in s.networks)
        return self.ip_of(self.boxes[router.name], "vlan"), 22

    def dial(self, src: str, targets: list[tuple[str, int]], timeout: float = 3.0) -> list[dict]:
        if src in self.nodes:
            return self.nodes[src].api.dial(targets, timeout=timeout, socks5=self.nodes[src].socks5)
        return self.hosts[src].dial(targets, timeout=timeout)

    async def adial(self, src: str, targets: list[tuple[str, int]], timeout: float = 3.0) -> list[dict]:
        """:meth:`dial` as a coroutine, for the probe engine's event loop."""
        if src in self.nodes:
            return await self.nodes[src].api.adial(targets, timeout=timeout, socks5=self.nodes[src].socks5)
        return await self.hosts[src].adial(targets, timeout=timeout)

    def wireguard_peer(self, src: str, address: str) -> str | None:
        """The tailnet IP of the peer whose WireGuard tunnel a packet from ``src`` to ``address``
        would take: the peer holding that address, or the peer that is primary for a route
        covering it (a subnet router; only when ``src`` accepts routes). None: ``src`` has no
        tailnet path to it at all (its netmap has no such peer: the policy relates them in no
        direction, or the route is not approved/accepted)."""
        st = self.nodes[src].status()
        ip = ipaddress.ip_address(address)
        peers = list((st.get("Peer") or {}).values())
        for peer in peers:
            if address in (peer.get("TailscaleIPs") or []):
                return next((i for i in peer["TailscaleIPs"] if ":" not in i), address)
        if self.nodes[src].accept_routes:
            for peer in peers:
                if any(ip in ipaddress.ip_network(r, strict=False) for r in peer.get("PrimaryRoutes") or []):
                    return next((i for i in peer.get("TailscaleIPs") or [] if ":" not in i), None)
        return None

    def tsmp_ping(self, src: str, peer_ip: str, timeout: float = 2.0) -> str | None:
        """One `tailscale ping --tsmp` from ``src`` to a peer; None when it answered, else what was
        seen. A TSMP ping travels the WireGuard tunnel and is answered by the peer's tailscaled
        before its packet filter (tailscale v1.102 net/tstun/wrap.go handles TSMP ahead of
        filter.RunIn), so a pong proves the session between the two nodes is up whatever the
        ACL says: the positive control a denial on that path is judged after."""
        return self.nodes[src].api.tsmp_ping(peer_ip, timeout)  # the LocalAPI call the CLI makes

    def set_route_approval(self, router: str, cidrs: Iterable[str]) -> None:
        """Approve exactly ``cidrs`` for ``router`` (empty: none) and wait until accepting nodes see it."""
        cidrs = list(cidrs)
        self.headscale.approve_routes(self.headscale.node_id(router), cidrs)
        self._after_route_change()
        expected = self.expected_primary_routes()
        expected[router] = set(cidrs)
        self.wait_routes_seen(expected)

    def reset(self) -> None:
        """Back to the topology's steady state: sidecars up, its policy, route approvals, acceptRoutes."""
        for name, pod in self.pods.items():
            pod.sidecar.container.reload()
            if pod.sidecar.container.status != "running":
                self.start_sidecar(name)
            elif self.nodes[name].backend_state() != "Running":
                self.sidecar_up(name)
            if pod.sut_config != ("", True, ()):
                self.start_sut(name)
        if self.policy != self.topology.policy:
            self.set_policy(self.topology.policy)
        for spec in self.topology.nodes:
            if spec.approve_routes:
                approved = next((set(r.get("approved_routes") or []) for r in self.headscale.routes()
                                 if r.get("given_name", r.get("name")) == spec.name), set())
                if approved != set(spec.approve_routes):
                    self.set_route_approval(spec.name, spec.approve_routes)
        for name, node in self.nodes.items():
            want = self.topology.node(name).accept_routes
            if node.accept_routes != want:
                node.set_accept_routes(want)
        if not self.headscale.dialect.outage_can_leave_nodes_offline:
            self.wait_routes_seen()
            return
        self.recover_control_plane()  # headscale 0.26-0.27: an outage can leave nodes offline

    def recover_control_plane(self, timeout: float = 30) -> None:
        """After a control-plane outage: the topology's routes seen and every peer online again;
        where they do not come back (headscale 0.26-0.27 can leave reconnected nodes offline with
        their routes cleared: the finding in fixtures/replays/findings/), headscale restarted."""
        try:
            self.wait_routes_seen(timeout=timeout)
            self.wait_mesh(timeout)
        except WorldError:
            self.restart_control_plane()
            self.wait_routes_seen()

    # ---------------------------------------------------------------- the SUT in its pod
    SECRET_PATH = SECRET_PATH

    def set_sut_standing(self, pod_name: str, env: dict[str, str], files: dict[str, tuple[bytes, int]]) -> None:
        """Settings and files every SUT of ``pod_name`` starts with from now on, reset() included
        (the credential layer's Vault address, CA and AppRole: world/credentials.py)."""
        self.sut_standing[pod_name] = (dict(env), dict(files))

    def start_sut(self, pod_name: str = "agent", mutant: str = "", with_secret: bool = True,
                  extra_env: dict[str, str] | None = None, key: Secret | None = None) -> SutClient:
        """(Re)start the SUT container of a pod, joined to its network namespace and socket volume.

        The pod's auth key is mounted as a file (as a Kubernetes Secret volume is) unless
        ``with_secret`` is False; userspace pods get SUT_PROXY pointing at the sidecar's SOCKS5.
        """
        pod = self.pods[pod_name]
        if pod.sut is not None:
            try:
                pod.sut.container.remove(force=True)
            except docker.errors.NotFound:
                pass
            self.boxes.pop(f"{pod_name}-sut", None)
        secret = (key or self.key_for(pod.spec.tags)) if with_secret else None
        image = self.sut_image or self.images["sut-reference"]
        command = None if self.sut_image else ["python3", "/opt/sut/runtime.py"]
        standing_env, files = self.sut_standing.get(pod_name, ({}, {}))
        pod.sut = start_sut_container(self.run_container, pod_name, pod, image, command, self.sut_port, mutant,
                                      secret, {**standing_env, **(extra_env or {})} or None)
        if files:  # read by the SUT when it needs them (a run's start), so copied in after it starts
            pod.sut.put(files)
        pod.sut_config = (mutant, with_secret, tuple(sorted((extra_env or {}).items())))
        client = SutClient(f"http://{pod.ip}:{self.sut_port}", name=f"SUT in pod {pod_name}")
        wait_serving(client, pod.sut, pod_name, self.sut_port, image)  # SutNotTestable: pod, port, command, log
        return client

    def pod_key(self, pod_name: str) -> str:
        """The pod's pre-auth key, for checks that must prove it never appears anywhere."""
        return self.key_for(self.pods[pod_name].spec.tags).reveal()

    def raw_logs(self, role: str) -> str:
        """A container's logs NOT redacted (only for secret-leak checks; never written anywhere)."""
        return self.boxes[role].container.logs().decode(errors="replace")

    def sut(self, pod_name: str = "agent") -> SutClient:
        return SutClient(f"http://{self.pods[pod_name].ip}:{self.sut_port}", name=f"SUT in pod {pod_name}")

    def stop_sidecar(self, pod_name: str = "agent") -> None:
        """Stop the pod's tailscale container (the socket stays in the volume, nobody answers it)."""
        self.pods[pod_name].sidecar.container.stop(timeout=5)

    def start_sidecar(self, pod_name: str = "agent") -> None:
        """The pod's sidecar running and Running again: a stopped container is started; a running
        one that is not Running (e.g. restarted while the control plane was down) is restarted.
        Why restart: its tailscaled retries the control plane with a growing backoff, and waited
        11.8 s to reach Running after the control plane came back (HEALTH-1, 2026-12-01, load ~13);
        a fresh tailscaled (its state kept in the container) logs in at once."""
        pod, node = self.pods[pod_name], self.nodes[pod_name]
        pod.sidecar.container.reload()
        if pod.sidecar.container.status != "running":
            pod.sidecar.container.start()
        elif node.backend_state() != "Running":
            pod.sidecar.container.restart(timeout=5)
        wait_for(f"{pod_name}'s sidecar Running again (state kept in its container)",
                 lambda: node.backend_state() == "Running", 60, describe=node.backend_state)

    def sidecar_down(self, pod_name: str = "agent") -> None:
        """`tailscale down`: the daemon keeps running and its socket answers, BackendState Stopped."""
        node = self.nodes[pod_name]
        node.tailscale("down")
        wait_for(f"{pod_name} BackendState Stopped", lambda: node.backend_state() == "Stopped", 30,
                 describe=node.backend_state)

    def sidecar_up(self, pod_name: str = "agent") -> None:
        node = self.nodes[pod_name]
        node.tailscale(*node.up_args)
        wait_for(f"{pod_name} BackendState Running", lambda: node.backend_state() == "Running", 60,
                 describe=node.backend_state)

    def kill_sidecar(self, pod_name: str = "agent") -> None:
        """kill -9 of the pod's tailscale container: unlike a stop (tailscaled removes its socket on
        SIGTERM), the socket file stays in the shared volume and nobody answers it."""
        pod = self.pods[pod_name]
        pod.sidecar.container.kill()

        def gone() -> bool:
            pod.sidecar.container.reload()
            return pod.sidecar.container.status != "running"
        wait_for(f"{pod_name}'s tailscale container gone after kill -9", gone, 15)
        code, out = pod.probe.exec(["test", "-S", TS_SOCKET])
        if code != 0:
            raise WorldError(f"{pod_name}: the socket {TS_SOCKET} did not survive kill -9 of the sidecar")

    @contextmanager
    def control_plane_down(self):
        """toxiproxy's `control` proxy (the nodes' only way to headscale) disabled: connections to
        the control plane are refused until the block exits."""
        control = self.toxiproxy.client().get_proxy("control")
        control.disable()
        try:
            yield
        finally:
            control.enable()

    def restart_control_plane(self, timeout: float = 60) -> None:
        """headscale's container restarted (its database, noise key, policy and TLS pair are files
        in it and stay): what it holds only in memory -- map sessions, and on 0.26-0.27 the
        primary-route table -- is rebuilt from the nodes as they reconnect. Waits until it answers
        over TLS again and every node is Running with its peers online."""
        box = self.headscale.box
        box.container.restart(timeout=5)
        self.headscale.ip = self.ip_of(box, "wan")  # the engine may hand it another address
        wait_for("headscale /health over TLS after its restart", lambda: self.headscale.healthy(self.certs.ca_pem), 60,
                 describe=lambda: f"GET /health: {self.headscale.health_state(self.certs.ca_pem)}; "
                                  f"{container_state(box, 8)}")
        self.wait_mesh(timeout)

    def restart_sidecar_container(self, pod_name: str = "agent") -> str:
        """Start the pod's stopped tailscale container and wait until its LocalAPI answers, in
        whatever state; returns that BackendState (it may not be Running: see HEALTH-1)."""
        pod, node = self.pods[pod_name], self.nodes[pod_name]
        pod.sidecar.container.start()

        def answering() -> str | None:
            state = node.backend_state()
            return None if state.startswith("unavailable") else state
        return wait_for(f"{pod_name}'s LocalAPI answering after its restart", answering, 30,
                        describe=node.backend_state)

    LISTENER = (b"import os, socket, sys\n"
                b"bind, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]\n"
                b"s = socket.socket(socket.AF_INET6 if ':' in bind else socket.AF_INET)\n"
                b"s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                b"s.bind((bind, port))\n"
                b"s.listen(64)\n"
                b"open(log, 'w').close()\n"
                b"open(log + '.pid', 'w').write(str(os.getpid()))\n"
                b"while True:\n"
                b"    c, peer = s.accept()\n"
                b"    with open(log, 'a') as f:\n"
                b"        f.write(peer[0] + '\\n')\n"
                b"    try:\n"
                b"        c.sendall(b'meshcert-listener port %d\\n' % port)\n"
                b"    except OSError:\n"
                b"        pass\n"
                b"    c.close()\n")

    @contextmanager
    def listening(self, where: str, port: int, bind: str = "0.0.0.0"):
        """A TCP listener on ``bind:port`` in a pod's network namespace (started in its probe
        container) or on a node; it greets, closes, and logs each peer address. Yields a function
        returning the peers seen so far. Stopped (by its pid) on exit."""
        box = self.pods[where].probe if where in self.pods else self.nodes[where].ts_box
        log = f"/tmp/meshcert-listener-{port}.log"
        box.put({"/tmp/meshcert-listener.py": (self.LISTENER, 0o644)})
        box.exec(["rm", "-f", log, log + ".pid", log + ".err"])

        def start() -> None:
            box.container.exec_run(["sh", "-c", f"exec python3 /tmp/meshcert-listener.py {bind} {port} {log} "
                                                f"2>{log}.err"], detach=True)

        def read(path: str) -> str | None:
            code, out = box.exec(["cat", path], answer=True)
            return out if code == 0 else None

        def started() -> str:
            pid = (read(log + ".pid") or "").strip()
            if not pid and "Address already in use" in (read(log + ".err") or ""):
                # the port is a local port of one of the container's own outbound connections
                # for now (a fixed port in the kernel's ephemeral range can be): try again
                box.exec(["rm", "-f", log + ".err"])
                start()
            return pid
        start()
        pid = wait_for(f"a listener on {bind}:{port} in {box.name}", started, 15,
                       describe=lambda: (read(log + ".err") or "")[-500:])

        def peers() -> list[str]:
            return (read(log) or "").split()
        try:
            yield peers
        finally:
            box.exec(["kill", pid])

    # ---------------------------------------------------------------- logs / teardown
    def failure_logs(self, clause: str) -> Path:
        """Save every container's logs for a failing clause; returns the folder."""
        self._failures += 1
        root = self.log_root or Path("reports") / "logs"
        return self.save_logs(root / f"{clause}-{self._failures}")

    def save_logs(self, directory: str | os.PathLike) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for role, box in self.boxes.items():
            (d / f"{role}.log").write_text(box.logs())
        for name, node in self.nodes.items():
            try:
                (d / f"{name}.status.json").write_text(redact(json.dumps(node.status(), indent=1)))
            except Exception as e:
                (d / f"{name}.status.json").write_text(json.dumps({"error": str(e)}))
        return d

    def stop(self) -> None:
        if self.client is None:
            return
        counts = lbl.remove_run(self.client, self.run_id)
        progress.say(f"world {self.run_id}: removed {counts}")
