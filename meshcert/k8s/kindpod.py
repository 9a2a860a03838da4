"""One pod of a kind cluster, as the checks see it: what the REAL kubelet says about it (the pod's
status, its containers' states and readiness, the cluster's events, ``kubectl logs``), commands
run inside its containers (``kubectl exec``, from inside the node), and a way in from this
machine for meshcert's probes.

The way in: the pod's IP lives on the node's own pod network (the ptp CNI), which this machine
does not route to. ``kubectl port-forward --address 0.0.0.0`` runs inside the node, so the pod's
ports answer on the node's address on the world's WAN network (a container of this machine,
nothing beyond it). The SUT's contract port is reached without it (:func:`sut_client`: each
request carried into the pod by ``kubectl exec``), so it answers in a pod that never gets Running.
Through the port-forward:

- meshcert's node agent (meshcert/world/nodeagent.py, stdlib only), started by
  :meth:`KindPod.start_agent` as a process of the pod's controller container (``python3 -c``,
  no file written: that container's root filesystem is read-only). It dials from inside the
  pod's network namespace (through the sidecar's SOCKS5 proxy in userspace mode), serves the
  banner ports of an agent, and reads the sidecar's LocalAPI through the socket volume the
  chart shares. So :func:`peer` is a :class:`~meshcert.world.node.TailnetNode` whose API is
  the pod's own: the world's ACL checks (meshcert/checks/acl.py) dial from that pod unchanged.

What this costs: the controller image must have ``python3`` (the reference SUT's does); the
agent's banner ports must be >= 1024 (the chart runs the controller as uid 1000).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
import requests.adapters

from meshcert.errors import EnvironmentProblem
from meshcert.secrets import redact
from meshcert.sut.client import SutClient
from meshcert.world import nodeagent
from meshcert.world.base import ANSWER_REREADS, NODE_API, Answers, NodeAPI, wait_for
from meshcert.world.node import TailnetNode

AGENT_SOURCE = Path(nodeagent.__file__).read_text()


@dataclass
class KindPod:
    """The one pod of a workload in a namespace of a :class:`~meshcert.k8s.kind.KindCluster`."""
    cluster: object        # kind.KindCluster (not imported: kind imports this module's users)
    namespace: str
    selector: str          # a label selector naming the workload's pods, e.g. app.kubernetes.io/instance=x
    _procs: list[subprocess.Popen] = field(default_factory=list)
    _pids: dict = field(default_factory=dict)  # Popen -> the pid of its kubectl inside the node
    _answers: dict[str, Answers] = field(default_factory=dict, repr=False)
    # The pod's name as get() last read it (every wait on the pod reads it). An exec or a log read
    # uses it rather than one more `kubectl get` first (0.18 CPU-s each, measured:
    # bench/results/poll-cost-*.json); a pod gone since is read again (_gone).
    _seen: str = ""

    # ---------------------------------------------------------------- what the kubelet says
    def get(self) -> dict:
        """The pod object (status written by the kubelet); {} while there is none."""
        got = self.cluster.api_get(f"/api/v1/namespaces/{self.namespace}/pods", {"labelSelector": self.selector})
        items = [p for p in got.get("items") or [] if not (p.get("metadata") or {}).get("deletionTimestamp")]
        pod = items[0] if items else {}
        self._seen = (pod.get("metadata") or {}).get("name") or ""
        return pod

    @property
    def name(self) -> str:
        """The pod's name: as last read (get), else read now; "" while there is no pod."""
        return self._seen or (self.get().get("metadata") or {}).get("name") or ""

    def _gone(self, code: int, err: str) -> bool:
        """Whether a kubectl call on the pod by name failed because that pod is gone (replaced):
        then the name is forgotten, and the caller asks once more."""
        if code != 0 and self._seen and f'pods "{self._seen}" not found' in err:
            self._seen = ""
            return True
        return False

    def container_names(self) -> list[str]:
        return [c.get("name") for c in ((self.get().get("spec") or {}).get("containers") or [])]

    def spec_container(self, name: str) -> dict:
        return next((c for c in (self.get().get("spec") or {}).get("containers") or [] if c.get("name") == name), {})

    def status_of(self, name: str, pod: dict | None = None) -> dict:
        """The kubelet's containerStatuses entry of container ``name`` ({} when it has none)."""
        pod = self.get() if pod is None else pod
        return next((c for c in (pod.get("status") or {}).get("containerStatuses") or [] if c.get("name") == name), {})

    def waiting(self, name: str, pod: dict | None = None) -> tuple[str, str]:
        """(reason, message) of a waiting container, ("", "") when it is not waiting."""
        w = (self.status_of(name, pod).get("state") or {}).get("waiting") or {}
        return w.get("reason") or "", w.get("message") or ""

    def running(self, name: str, pod: dict | None = None) -> bool:
        return "running" in (self.status_of(name, pod).get("state") or {})

    def ready(self, name: str, pod: dict | None = None) -> bool:
        """The kubelet's verdict on the container's readiness probe."""
        return self.status_of(name, pod).get("ready") is True

    def brief(self, pod: dict | None = None) -> str:
        """One line: phase and each container's state, readiness and restarts (for failure messages)."""
        pod = self.get() if pod is None else pod
        st = pod.get("status") or {}
        parts = []
        for c in st.get("containerStatuses") or []:
            state = next(iter(c.get("state") or {"?": {}}))
            why = ((c.get("state") or {}).get(state) or {}).get("reason") or ""
            parts.append(f"{c.get('name')}: {state}{'/' + why if why else ''} ready={c.get('ready')} "
                         f"restarts={c.get('restartCount')}")
        return f"phase {st.get('phase')}; " + "; ".join(parts) if pod else "no pod"

    def events(self) -> list[dict]:
        """The cluster's events about this pod (reason, message, type), oldest first."""
        name = self.name
        if not name:
            return []
        items = self.cluster.api_get(f"/api/v1/namespaces/{self.namespace}/events",
                                     {"fieldSelector": f"involvedObject.name={name}"}).get("items") or []
        items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return [{"reason": e.get("reason"), "message": e.get("message"), "type": e.get("type")} for e in items]

    # ---------------------------------------------------------------- inside the pod
    def exec(self, container: str, cmd: list[str], stdin: str | None = None, timeout: float = 60, *,
             answer: bool = False) -> tuple[int, str]:
        """(exit code, stdout+stderr) of ``cmd`` in ``container`` (``kubectl exec``); ``answer`` as
        in Box.exec (kubectl's own `docker exec` into the node may lose output too)."""
        if answer:
            return self._answers.setdefault(container, Answers()).exec(
                container, cmd, f"kind pod {self.namespace}/{container}",
                run=lambda c, argv: self.exec(c, argv, stdin, timeout))
        for _ in range(2):
            code, out, err = self.cluster.kubectl_run("-n", self.namespace, "exec", *(["-i"] if stdin is not None else []),
                                                      self.name, "-c", container, "--", *cmd, stdin=stdin, timeout=timeout)
            if not self._gone(code, err):
                break
        return code, out + err

    def logs(self, container: str, previous: bool = False) -> str:
        """``kubectl logs`` of a container, NOT redacted (for secret-leak checks; never written as is)."""
        for _ in range(2 + ANSWER_REREADS):
            code, out, err = self.cluster.kubectl_run("-n", self.namespace, "logs", self.name, "-c", container,
                                                      *(["--previous"] if previous else []))
            # read again when the pod was replaced, or when the log came back empty: `docker exec`
            # into the node may have lost it (see ANSWER_REREADS), and a secret check reads it
            if not self._gone(code, err) and (code != 0 or out):
                break
        return out if code == 0 else f"(no logs: {err.strip()[-300:]})"

    def wait_ready(self, container: str, timeout: float = 120) -> None:
        wait_for(f"kind pod ({self.selector}): container {container} ready (the kubelet's readiness probe)",
                 lambda: self.ready(container), timeout, describe=self.brief)

    # ---------------------------------------------------------------- from this machine
    def _background(self, args: list[str], what: str, ready: str, timeout: float = 60) -> subprocess.Popen:
        """A long-lived kubectl inside the node, kept until :meth:`close`; waits for ``ready`` in its output."""
        # The kubectl is started by a shell that first prints its pid (inside a kind node, ending
        # the `docker exec` client would not end it), and close() has the cluster kill that pid.
        argv = self.cluster.background_argv(*args)
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._procs.append(p)
        seen: list[str] = []
        found = threading.Event()

        def read() -> None:
            for line in p.stdout:
                if line.startswith("meshcert-pid ") and p not in self._pids:
                    self._pids[p] = line.split()[1]
                    continue
                seen.append(line.rstrip())
                if ready in line:
                    found.set()
        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.2):
            if p.poll() is not None or time.monotonic() > deadline:
                raise EnvironmentProblem(what, f"{'exited ' + str(p.returncode) if p.poll() is not None else 'no answer'}"
                                               f": {redact(' | '.join(seen[-5:]))[-600:]}")
        return p

    def start_agent(self, container: str, name: str, banner_ports: tuple[int, ...]) -> None:
        """meshcert's node agent as a process of ``container`` (its API on NODE_API, banners on
        ``banner_ports``), until :meth:`close` ends the exec that holds it."""
        self._background(["-n", self.namespace, "exec", "-i", self.name, "-c", container, "--", "env",
                          f"MESHCERT_NAME={name}", "python3", "-u", "-c", AGENT_SOURCE, "--api", str(NODE_API),
                          "--banner", ",".join(map(str, banner_ports))],
                         f"node agent in kind pod {self.selector}", f"nodeagent {name}:")

    def listen(self, container: str, port: int, bind: str = "127.0.0.1") -> None:
        """Something accepting TCP on ``bind:port`` in the pod (a process of ``container`` that
        greets and closes), until :meth:`close`."""
        script = ("import socket, sys\n"
                  "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                  f"s.bind(({bind!r}, {port})); s.listen(16)\n"
                  f"print('meshcert-listening {port}', flush=True)\n"
                  "while True:\n"
                  "    c, _ = s.accept()\n"
                  "    c.sendall(b'meshcert-listener\\n'); c.close()\n")
        self._background(["-n", self.namespace, "exec", "-i", self.name, "-c", container, "--", "python3", "-u", "-c",
                          script], f"listener on {bind}:{port} in kind pod {self.selector}", f"meshcert-listening {port}")

    def forward(self, *ports: int) -> dict[int, int]:
        """``kubectl port-forward`` of the pod's ``ports`` where the cluster puts it (a kind node:
        on every address of the node, same numbers; a user's cluster: this machine's loopback, free
        ports); returns pod port -> the port that answers (on ``cluster.forward_host``)."""
        local = {p: self.cluster.forward_port(p) for p in ports}
        address = self.cluster.forward_address()
        self._background(["-n", self.namespace, "port-forward", "--address", address, f"pod/{self.name}",
                          *(f"{local[p]}:{p}" for p in ports)], f"port-forward to kind pod {self.selector}",
                         f"Forwarding from {address}:{local[ports[-1]]}")
        return local

    def close(self) -> None:
        """End the background kubectl processes (agent, port-forward) this handle started."""
        for p in self._procs:
            pid = self._pids.pop(p, None)
            if pid:
                self.cluster.stop_background(pid)
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._procs.clear()


# Run inside the pod's container by ExecAdapter: one HTTP request to 127.0.0.1:<port> (the
# request comes on stdin as JSON; the status line and body go to stdout).
_RELAY = """import http.client, json, sys
r = json.load(sys.stdin)
c = http.client.HTTPConnection("127.0.0.1", r["port"], timeout=r["timeout"])
c.request(r["method"], r["path"], body=r["body"].encode() if r["body"] is not None else None,
          headers={"Content-Type": "application/json"})
a = c.getresponse()
sys.stdout.write(str(a.status) + chr(10) + a.read().decode(errors="replace"))
"""


class ExecAdapter(requests.adapters.BaseAdapter):
    """A requests transport that carries each HTTP request into a container of the pod
    (``kubectl exec ... python3``) and sends it to 127.0.0.1 there: the pod's own ports answer
    whatever the pod's phase (``kubectl port-forward`` refuses a Pending pod, e.g. one whose
    sidecar the kubelet will not start)."""

    def __init__(self, pod: KindPod, container: str, port: int):
        super().__init__()
        self.pod, self.container, self.port = pod, container, port

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        t = timeout[1] if isinstance(timeout, tuple) else timeout
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        path = request.path_url
        ask = json.dumps({"port": self.port, "timeout": float(t or 60), "method": request.method, "path": path,
                          "body": body})
        code, out = self.pod.exec(self.container, ["python3", "-c", _RELAY], stdin=ask, timeout=float(t or 60) + 30)
        status, _, text = out.partition("\n")
        if code != 0 or not status.isdigit():
            raise requests.ConnectionError(f"kind pod {self.pod.namespace}/{self.container}: {request.method} {path} "
                                           f"via kubectl exec: exit {code}: {redact(out.strip())[-300:]}")
        resp = requests.Response()
        resp.status_code, resp._content, resp.url, resp.request = int(status), text.encode(), request.url, request
        resp.headers["Content-Type"] = "application/json"
        resp.encoding = "utf-8"
        return resp

    def close(self) -> None:
        pass


def sut_client(pod: KindPod, container: str, port: int) -> SutClient:
    """The SUT contract client for the SUT in ``container`` of the kind pod (see ExecAdapter)."""
    client = SutClient(f"http://kind-pod.{pod.namespace}", name=f"SUT in kind pod {pod.namespace}")
    client.s.mount("http://kind-pod.", ExecAdapter(pod, container, port))
    return client


class KindBox:
    """A container of a kind pod where a Box is expected (the tailscale CLI, saved logs)."""

    def __init__(self, pod: KindPod, container: str, role: str):
        self.pod, self.container_name, self.role = pod, container, role
        self.name = f"{pod.namespace}/{container}"

    def exec(self, cmd: list[str], *, answer: bool = False) -> tuple[int, str]:
        return self.pod.exec(self.container_name, cmd, answer=answer)

    def logs(self) -> str:
        return redact(self.pod.logs(self.container_name))


def peer(pod: KindPod, name: str, tags: tuple[str, ...], node_ip: str, sidecar: str, *, accept_routes: bool,
         socks5: str | None, api_port: int = NODE_API) -> TailnetNode:
    """The kind pod as a tailnet node of the world: its API is the agent in the pod, reached
    through the cluster's port-forward on ``node_ip:api_port`` (:meth:`KindPod.start_agent` and
    :meth:`KindPod.forward` must run first); its CLI is the sidecar's."""
    return TailnetNode(name, tags, KindBox(pod, sidecar, name), NodeAPI(name, node_ip, api_port), node_ip,
                       accept_routes, socks5=socks5)


@contextmanager
def registered(world, node: TailnetNode, pod: KindPod, containers: dict[str, str]) -> Iterator[TailnetNode]:
    """``node`` among the world's tailnet nodes (policy waits, dials, saved logs) and the pod's
    containers among its boxes, for one check; removed after it, so the world's own reset and
    steady-state waits never meet a node of a cluster that may be gone."""
    world.nodes[node.name] = node
    roles = {}
    for container, role in containers.items():
        roles[role] = KindBox(pod, container, role)
        world.boxes[role] = roles[role]
    try:
        yield node
    finally:
        world.nodes.pop(node.name, None)
        for role in roles:
            world.boxes.pop(role, None)
