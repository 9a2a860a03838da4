"""The credential layer's images (issue 13), built like images.py's others (local, tagged by a
hash of their Dockerfile and files, no registry): Debian's own packages, installed by apt from
the mirror the base image was bootstrapped from.

- ``vault``: host + the pinned Vault binary (components.py, tools/vault).
- ``server``: tailscale + Debian's openssh-server. sshd trusts Vault's SSH CA and nothing else:
  no passwords, no keyboard-interactive, no authorized_keys files (``AuthorizedKeysFile none``);
  the CA's public key is copied in by the world once Vault made it (sshd reads
  ``TrustedUserCAKeys`` at each authentication, so it may arrive after sshd started).
- ``sshd-host``: host + the same sshd (the legacy VLAN host, reached through the subnet router).
- ``database``: tailscale + Debian's PostgreSQL 15, a cluster made at build time that accepts
  only password (SCRAM) logins over TCP; the world makes Vault's admin role (CREATEROLE). It runs
  the same sshd too: the policy grants the agent only 5432/3306 there, so its port 22 is a
  target the ACLs deny to an agent holding a valid certificate (CRED-6).
- ``clients``: host + Debian's OpenSSH and PostgreSQL client programs (the tool layer's).

The Unix account the certificates name is ``agent`` (``*`` as its password field: no password
matches it, and it is not "locked", which would refuse public-key logins too).
"""

from __future__ import annotations

SSH_USER = "agent"
SSH_CA_PATH = "/etc/ssh/meshcert/vault-ssh-ca.pub"
PG_DATA = "/var/lib/postgresql/data"
PG_BIN = "/usr/lib/postgresql/15/bin"

_APT = ("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {pkgs}"
        " && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /usr/share/doc /usr/share/man")

# First value wins in sshd_config, and Debian's includes sshd_config.d/*.conf at its top.
SSHD_CONF = "\n".join([
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "ChallengeResponseAuthentication no",
    "PermitRootLogin no",
    "PubkeyAuthentication yes",
    "AuthorizedKeysFile none",            # no static keys: only certificates
    f"TrustedUserCAKeys {SSH_CA_PATH}",   # ...signed by Vault's SSH CA
    "AuthorizedPrincipalsFile none",      # the certificate must name the account as a principal
    "UsePAM no",
    "LogLevel VERBOSE",                   # logs each accepted certificate's key ID, serial and CA
    "MaxStartups 100:30:200",             # concurrent probes are not a connection flood
])

SSHD_RUN = (_APT.format(pkgs="openssh-server")
            + " && rm -f /etc/ssh/ssh_host_* && mkdir -p /run/sshd /etc/ssh/meshcert"
            + f" && useradd -m -s /bin/sh {SSH_USER} && usermod -p '*' {SSH_USER}"
            + " && printf '%s\\n' " + " ".join(f"'{line}'" for line in SSHD_CONF.splitlines())
            + " > /etc/ssh/sshd_config.d/meshcert.conf")

PG_HBA = "\\n".join([
    "local all postgres peer",
    "host all all 0.0.0.0/0 scram-sha-256",
    "host all all ::/0 scram-sha-256",
])

DATABASE_RUN = (_APT.format(pkgs="postgresql-15")
                + " && (pg_dropcluster --stop 15 main || true)"
                + f" && mkdir -p {PG_DATA} /var/run/postgresql && chown postgres:postgres {PG_DATA} /var/run/postgresql"
                + f" && su postgres -s /bin/sh -c '{PG_BIN}/initdb -D {PG_DATA} -U postgres --auth-local=peer"
                + " --auth-host=scram-sha-256 >/dev/null'"
                + f" && printf '{PG_HBA}\\n' > {PG_DATA}/pg_hba.conf")

CLIENTS_RUN = _APT.format(pkgs="openssh-client postgresql-client-15")


def recipe_specs() -> dict[str, tuple[str, str]]:
    """{image name: (parent image name, Dockerfile lines)}; the vault image's binary is a file."""
    return {
        "vault": ("host", "RUN mkdir -p /vault/data /vault/config /vault/tls"),
        "server": ("tailscale", f"RUN {SSHD_RUN}"),
        "sshd-host": ("host", f"RUN {SSHD_RUN}"),
        "database": ("tailscale", f"RUN {DATABASE_RUN} && {SSHD_RUN}"),
        "clients": ("host", f"RUN {CLIENTS_RUN}"),
    }
