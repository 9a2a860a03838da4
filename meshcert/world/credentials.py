"""The credential layer on a running world (issue 13): ``credential_topology`` (the guide's
world with real targets: sshd on ``server`` and on the legacy VLAN host, PostgreSQL on
``database``), ``add_vault`` (Vault started, initialised, unsealed and configured, the targets
made to trust it), and ``ToolBox``: the tool layer's client programs (Debian's ssh and psql) in
a container joined to an agent pod's network namespace, so a login travels the pod's path
(its sidecar, the mesh, ACLs and routes) exactly as the SUT's would.

Like extra.py, this composes container kinds on a World; the World itself knows only that a
node's or host's ``image`` may name a credential target (targets.py)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import re
import secrets as pysecrets
import time

from meshcert.secrets import Secret
from meshcert.sut.client import SutClient
from meshcert.toolchain import images as img
from meshcert.world.base import Box, WorldError, container_state
from meshcert.world.targets import PG_PORT, SSH_PORT, install_ssh_ca, make_vault_admin, mesh_only, wait_postgres
from meshcert.world.topology import Topology, guide_topology
from meshcert.world.vault import Vault, serve_tls, start_vault
from meshcert.world.world import World

SSH_USER = "agent"


def credential_topology(vlan: str | None = None) -> Topology:
    """The guide's world with real targets, on the same ports: sshd's version line and
    PostgreSQL's TLS certificate carry the banner the probes read (targets.py), so the ACL and
    route checks run on it unchanged."""
    topo = guide_topology(vlan) if vlan else guide_topology()
    nodes = []
    for n in topo.nodes:
        if n.name == "server":
            n = dataclasses.replace(n, image="server")
        elif n.name == "database":
            n = dataclasses.replace(n, image="database")
        nodes.append(n)
    hosts = tuple(dataclasses.replace(h, image="sshd-host") if h.name == "legacy" else h for h in topo.hosts)
    return dataclasses.replace(topo, nodes=tuple(nodes), hosts=hosts)


def start_vault_beside(world: World) -> Vault:
    """Vault started, initialised and unsealed in ``world``: its image, its own volume, its
    container on the WAN network, its TLS. Needs only the world's networks, so it runs beside the
    nodes while they start and join (``World.start(beside=start_vault_beside)``); configuring it
    needs the targets (:func:`configure_vault`)."""
    t0 = time.monotonic()
    images = world.images
    if "vault" not in images:
        images.update(img.ensure_images(world.client, ("vault",)))
    t = time.monotonic()
    volume = world._create_volume("vault-data")
    box = start_vault(world.run_container, images["vault"], volume)
    ip = world.ip_of(box, "wan")
    certs = serve_tls(box, ip, world.run_id)
    vault = Vault(box, ip, certs)
    vault.timings["image"], vault.timings["container"] = t - t0, time.monotonic() - t
    vault.init_and_unseal()
    vault.timings["started"] = time.monotonic() - t0
    return vault


def configure_vault(world: World, vault: Vault) -> Vault:
    """The operator's configuration of a started Vault (vault.py) on the running world: Vault
    manages PostgreSQL roles on ``database``; sshd on every target trusts its SSH CA."""
    t0 = time.monotonic()
    t = time.monotonic()
    db_box = world.boxes["database"]
    wait_postgres(db_box)
    admin = make_vault_admin(db_box)
    vault.timings["postgres"] = time.monotonic() - t
    vault.configure("database", admin)
    t = time.monotonic()
    # sshd on every target trusts Vault's CA; sshd and PostgreSQL on the tailnet targets take
    # connections from tailscale0 only (Vault's own to PostgreSQL aside): credentials are never a
    # path around the mesh (CRED-6). Each a few docker execs: at once.
    jobs = [lambda b=world.boxes[r]: install_ssh_ca(b, vault.ssh_ca_public_key)
            for r in ("server", "database", "legacy") if r in world.boxes]
    jobs += [lambda: mesh_only(world.boxes["server"], (SSH_PORT,)),
             lambda: mesh_only(db_box, (SSH_PORT, PG_PORT), allow={PG_PORT: vault.ip})]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as ex:
        for f in [ex.submit(j) for j in jobs]:
            f.result()
    vault.timings["targets"] = time.monotonic() - t
    world.timings["vault"] = world.timings.get("vault", 0.0) + time.monotonic() - t0
    return vault


def add_vault(world: World) -> Vault:
    """Vault in a running ``world`` (whose topology is credential_topology's): started on its own
    volume, initialised, unsealed, configured; sshd on every target trusts its SSH CA; Vault
    manages PostgreSQL roles on ``database``. Its timings land in world.timings["vault"]. (A
    world started with ``beside=start_vault_beside`` has it started already:
    :func:`configure_vault`.)"""
    t0 = time.monotonic()
    vault = start_vault_beside(world)
    world.timings["vault"] = time.monotonic() - t0
    return configure_vault(world, vault)


@dataclasses.dataclass
class Result:
    code: int
    out: str


class ToolBox:
    """ssh and psql in the pod ``pod_name``'s network namespace (the ``clients`` image). Keys
    are made inside it and never leave it; a password reaches psql through its environment."""

    def __init__(self, world: World, pod_name: str = "agent"):
        if "clients" not in world.images:
            world.images.update(img.ensure_images(world.client, ("clients",)))
        pod = world.pods[pod_name]
        self.pod = pod_name
        self.box: Box = world.run_container(f"{pod_name}-clients", world.images["clients"], ["sleep", "infinity"],
                                            **pod.netns)

    def new_key(self) -> tuple[str, str]:
        """A fresh ed25519 key pair inside the container: (its path, its public key)."""
        path = f"/tmp/run-{pysecrets.token_hex(4)}"
        code, out = self.box.exec(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "meshcert-run", "-f", path])
        if code != 0:
            raise WorldError(f"ssh-keygen in {self.box.name} failed: {out.strip()[-300:]}")
        code, pub = self.box.exec(["cat", path + ".pub"], answer=True)
        return path, pub.strip()

    def put_cert(self, key_path: str, signed: str) -> None:
        self.box.put({key_path + "-cert.pub": (signed.strip().encode() + b"\n", 0o644)})

    def forget_key(self, key_path: str) -> None:
        self.box.exec(["rm", "-f", key_path, key_path + ".pub", key_path + "-cert.pub"])

    def ssh(self, key_path: str, host: str, command: str, timeout: float = 15) -> Result:
        """``ssh agent@host command`` with the key and its certificate only (no agent, no other
        identity, no password prompt)."""
        code, out = self.box.exec([
            "timeout", f"{timeout:g}", "ssh", "-F", "/dev/null", "-i", key_path,
            "-o", f"CertificateFile={key_path}-cert.pub", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "PasswordAuthentication=no", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", f"ConnectTimeout={max(1, int(timeout) - 2)}", "-o", "LogLevel=ERROR", "-p", str(SSH_PORT),
            f"{SSH_USER}@{host}", command], answer=True)
        return Result(code, out)

    def psql(self, host: str, user: str, password: Secret, sql: str, timeout: float = 15) -> Result:
        code, out = self.box.exec(
            ["timeout", f"{timeout:g}", "psql", "-X", "-qAt", "-v", "ON_ERROR_STOP=1",
             f"host={host} port=5432 dbname=postgres user={user} connect_timeout={max(1, int(timeout) - 2)} "
             "sslmode=require", "-c", sql],
            answer=True, environment={"PGPASSWORD": password.reveal()})
        return Result(code, out)

    def state(self) -> str:
        return container_state(self.box)


def sshd_accepted(log: str, serial: int | str) -> list[str]:
    """The lines of an sshd log (LogLevel VERBOSE) accepting a certificate with ``serial``."""
    return [line for line in log.splitlines()
            if "Accepted publickey" in line and re.search(rf"\bserial {serial}\b", line)]


VAULT_SECRETS = "/run/secrets/vault"  # the pod's Vault material, mounted as a Kubernetes Secret volume is


def start_sut_with_vault(world: World, vault: Vault, pod_name: str = "agent", mutant: str = "",
                         env: dict[str, str] | None = None) -> SutClient:
    """(Re)start the pod's SUT with the run lifecycle's configuration: Vault's address and CA, and
    the pod's AppRole as files (read at each run's start, so they are copied in after it starts).
    ``env``: settings over these (a wrong Vault address or role path: bad input)."""
    standing = {"VAULT_ADDR": vault.url, "VAULT_CACERT": f"{VAULT_SECRETS}/ca.pem",
                "VAULT_ROLE_ID_FILE": f"{VAULT_SECRETS}/role-id", "VAULT_SECRET_ID_FILE": f"{VAULT_SECRETS}/secret-id"}
    if pod_name not in world.sut_standing:  # one AppRole secret ID per pod, as its Kubernetes Secret
        creds = vault.approle_creds()
        world.set_sut_standing(pod_name, standing, {
            f"{VAULT_SECRETS}/ca.pem": (vault.certs.ca_pem, 0o644),
            f"{VAULT_SECRETS}/role-id": (creds.role_id.encode(), 0o400),
            f"{VAULT_SECRETS}/secret-id": (creds.secret_id.reveal().encode(), 0o400)})
    return world.start_sut(pod_name, mutant=mutant, extra_env=env)
