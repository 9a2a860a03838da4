"""Credential targets: container kinds of the world (issue 13). The tailnet nodes ``server``
(Debian's sshd) and ``database`` (Debian's PostgreSQL 15) run their service beside tailscaled
and meshcert's node agent, so ACLs and routes apply to them as to every node; the legacy VLAN
host runs sshd beside its node agent and is reached through the subnet router.

Probes keep proving which host they reached: sshd's version line carries the banner the
probes look for (``VersionAddendum meshcert-banner host=<name> port=22``), so the node agent
leaves that port to sshd; a PostgreSQL server greets nobody, so the database's identity is
what a query returns (``current_setting('cluster_name')`` is the node's name) and what its TLS
certificate says: PostgreSQL serves TLS (``sslmode=require`` works) with a certificate whose
subject is that banner line, which the node agent's dial reads when a port greets nobody
(nodeagent.py: an SSLRequest, then the certificate).

sshd trusts Vault's SSH CA and nothing else (credimages.SSHD_CONF); the CA's public key is
copied in once Vault made it (:func:`install_ssh_ca`). PostgreSQL accepts only SCRAM password
logins over TCP; :func:`make_vault_admin` makes the role Vault's database engine manages users
with (LOGIN CREATEROLE, a random password held as a Secret, rotated by Vault at once).
"""

from __future__ import annotations

import datetime
import secrets as pysecrets
import shlex
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshcert.secrets import Secret
from meshcert.toolchain.credimages import PG_BIN, PG_DATA, SSH_CA_PATH
from meshcert.world.base import Box, Launcher, WorldError, wait_for
from meshcert.world.node import CA_PATH, CAPS, IPV6_ON, tailscaled, ts_env
from meshcert.world.topology import HostSpec, NodeSpec

SSH_PORT = 22
PG_PORT = 5432
PG_CONF = "/etc/meshcert/postgresql.conf"
PG_TLS_IN = "/etc/meshcert/pg-tls"          # copied in as root; installed for postgres at start
PG_TLS = "/var/lib/postgresql/tls"
PG_ADMIN = "vaultadmin"


def _sshd(name: str) -> str:
    """sshd in the foreground of a background shell job, logging to the container's log (-e)."""
    addendum = shlex.quote(f"VersionAddendum=meshcert-banner host={name} port={SSH_PORT}")
    return f"ssh-keygen -A -q && /usr/sbin/sshd -D -e -o {addendum}"


def pg_conf(name: str) -> bytes:
    return "\n".join([
        "listen_addresses = '*'",
        f"port = {PG_PORT}",
        f"cluster_name = '{name}'",             # what a query names: the probe's proof of the host
        f"hba_file = '{PG_DATA}/pg_hba.conf'",
        f"ident_file = '{PG_DATA}/pg_ident.conf'",
        "unix_socket_directories = '/var/run/postgresql'",
        "password_encryption = 'scram-sha-256'",
        "log_connections = on",                 # the target's own record of who logged in
        "log_disconnections = on",
        "log_line_prefix = '%m [%p] %q%u@%d '",
        "max_connections = 50",
        "shared_buffers = 16MB",                # a test database: small, many worlds share the machine
        "ssl = on",
        f"ssl_cert_file = '{PG_TLS}/server.crt'",
        f"ssl_key_file = '{PG_TLS}/server.key'",
        "",
    ]).encode()


def pg_tls(name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate whose subject is the node's banner line (the probe's proof of
    the host, read from the TLS handshake), and its key."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"meshcert-banner host={name} port={PG_PORT}")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _postgres() -> str:
    # PostgreSQL reads a key file only if it is private to its owner: installed for postgres here
    return (f"install -d -o postgres -m 700 {PG_TLS} && install -o postgres -m 600 {PG_TLS_IN}/server.crt "
            f"{PG_TLS_IN}/server.key {PG_TLS}/ && rm -f {PG_TLS_IN}/server.key && "
            f"su postgres -s /bin/sh -c 'exec {PG_BIN}/postgres -D {PG_DATA} -c config_file={PG_CONF}'")


def start_target_node(run: Launcher, image: str, spec: NodeSpec, ca_pem: bytes, networks: dict[str, Any]) -> Box:
    """A credential target node (``spec.image`` is ``server`` or ``database``): tailscaled
    (kernel TUN) + its service + meshcert's node agent serving the banner ports the service
    does not hold."""
    files = {CA_PATH: (ca_pem, 0o644)}
    if spec.image == "server":
        service, held = _sshd(spec.name), {SSH_PORT}
    elif spec.image == "database":  # PostgreSQL, and sshd on the port the policy denies (CRED-6)
        service, held = f"({_sshd(spec.name)}) & {_postgres()}", {PG_PORT, SSH_PORT}
        crt, key = pg_tls(spec.name)
        files.update({PG_CONF: (pg_conf(spec.name), 0o644), f"{PG_TLS_IN}/server.crt": (crt, 0o644),
                      f"{PG_TLS_IN}/server.key": (key, 0o600)})
    else:
        raise WorldError(f"node {spec.name}: no credential target kind for image {spec.image!r}")
    banners = ",".join(str(p) for p in spec.banner_ports if p not in held)
    kw = dict(CAPS, sysctls=dict(IPV6_ON))
    box = run(spec.name, image,
              ["sh", "-c", f"({service}) & {tailscaled(spec.name)} & exec python3 /opt/meshcert/world/nodeagent.py "
                           f"--banner '{banners}'"],
              network=spec.networks[0], environment=ts_env(spec.name), files=files, hostname=spec.name, **kw)
    for extra in spec.networks[1:]:
        networks[extra].connect(box.container, aliases=[spec.name])
    return box


def start_sshd_host(run: Launcher, image: str, spec: HostSpec) -> Box:
    """A plain host (off the tailnet) running sshd on 22 beside its node agent."""
    banners = ",".join(str(p) for p in spec.banner_ports if p != SSH_PORT)
    return run(spec.name, image,
               ["sh", "-c", f"({_sshd(spec.name)}) & exec python3 /opt/meshcert/world/nodeagent.py "
                            f"--banner '{banners}'"],
               network=spec.network, hostname=spec.name, ipv4_address=spec.address,
               environment={"MESHCERT_NAME": spec.name})


MESH_ONLY_TABLE = "meshcert_mesh_only"


def mesh_only(box: Box, ports: tuple[int, ...], allow: dict[int, str] | None = None) -> None:
    """``box`` takes ``ports`` only from tailscale0 (and loopback): the mesh is the only path to
    its sshd and PostgreSQL, whatever Docker network a client shares with it. ``allow``: {port:
    address} also let in off the mesh (Vault's own connection to PostgreSQL)."""
    rules = ['iifname "lo" accept', 'iifname "tailscale0" accept']
    rules += [f"ip saddr {addr} tcp dport {port} accept" for port, addr in (allow or {}).items()]
    rules.append(f"tcp dport {{ {', '.join(str(p) for p in ports)} }} drop")
    ruleset = (f"table inet {MESH_ONLY_TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n"
               + "".join(f"    {r}\n" for r in rules) + "  }\n}\n")
    path = "/tmp/meshcert-mesh-only.nft"
    box.put({path: (ruleset.encode(), 0o644)})
    code, out = box.exec(["nft", "-f", path])
    if code != 0:
        raise WorldError(f"nft in {box.name} (mesh-only rules) failed: {out.strip()[-300:]}")


def install_ssh_ca(box: Box, public_key: str) -> None:
    """Make ``box``'s sshd trust exactly this CA (read at each authentication: no restart)."""
    box.put({SSH_CA_PATH: (public_key.strip().encode() + b"\n", 0o644)})


def wait_postgres(box: Box, timeout: float = 60) -> None:
    """PostgreSQL accepts connections on its TCP port (pg_isready inside the container)."""
    def ready() -> bool:
        return box.exec([f"{PG_BIN}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(PG_PORT)])[0] == 0
    wait_for(f"PostgreSQL on {box.name} accepting connections", ready, timeout,
             describe=lambda: "pg_isready: " + box.exec([f"{PG_BIN}/pg_isready", "-h", "127.0.0.1"])[1].strip())


def psql_local(box: Box, sql: str) -> str:
    """Run ``sql`` as the postgres superuser inside the database container (a file, never a
    command line: it may hold a password); returns psql's output."""
    path = f"/tmp/meshcert-{pysecrets.token_hex(4)}.sql"
    box.put({path: (sql.encode(), 0o644)})
    try:
        code, out = box.exec(["su", "postgres", "-s", "/bin/sh", "-c",
                              f"psql -h /var/run/postgresql -v ON_ERROR_STOP=1 -qAt -f {path}"], answer=True)
    finally:
        box.exec(["rm", "-f", path])
    if code != 0:
        raise WorldError(f"psql on {box.name} failed ({code}): {out.strip()[-400:]}")
    return out


def make_vault_admin(box: Box) -> Secret:
    """The role Vault's database engine connects as: LOGIN CREATEROLE (creates and drops the
    runs' roles), no superuser. Its first password is random; Vault rotates it at once."""
    password = Secret(pysecrets.token_urlsafe(24), "PostgreSQL admin password")
    psql_local(box, f"CREATE ROLE {PG_ADMIN} WITH LOGIN CREATEROLE PASSWORD '{password.reveal()}';")
    return password


def pg_roles(box: Box) -> list[str]:
    """The login roles PostgreSQL holds now, other than its own superuser and Vault's admin."""
    out = psql_local(box, "SELECT rolname FROM pg_roles WHERE rolcanlogin "
                          f"AND rolname NOT IN ('postgres', '{PG_ADMIN}') ORDER BY 1;")
    return [line for line in out.splitlines() if line.strip()]
