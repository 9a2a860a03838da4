"""Vault's Kubernetes auth against a kind cluster of meshcert's, as an operator sets it up (issue 13:
"Kubernetes auth where a cluster exists").

- In the cluster: a namespace ``meshcert-vault`` with the service account ``vault-token-reviewer``,
  bound to ``system:auth-delegator`` (it may create TokenReviews), and a token for it from the
  TokenRequest API (``kubectl create token``): Vault's reviewer JWT. The agent pod's own service
  account needs no cluster permission.
- The API server as Vault's container reaches it: the kind node is attached to the world's WAN
  (kind.world_cluster), where Docker's DNS answers its container name, which kubeadm puts in the
  API server's certificate (the node's name); port 6443 inside the node. The cluster's CA comes
  from the node (``/etc/kubernetes/pki/ca.crt``).
- In Vault (:meth:`meshcert.world.vault.Vault.configure_kubernetes`): ``auth/kubernetes/config``
  with that host, CA and reviewer JWT; then role ``agent`` bound to a service account and
  namespace (:meth:`~meshcert.world.vault.Vault.bind_kubernetes_role`).

Nothing here leaves this machine: the node and Vault are containers of its engine.
"""

from __future__ import annotations

import subprocess

from meshcert.errors import EnvironmentProblem
from meshcert.secrets import Secret, redact
from meshcert.world.vault import Vault

REVIEWER_NAMESPACE = "meshcert-vault"
REVIEWER = "vault-token-reviewer"
API_PORT = 6443
CA_PATH = "/etc/kubernetes/pki/ca.crt"
# How long the reviewer's token lives: longer than any module of kind tests.
REVIEWER_TTL = "2h"


def reviewer_manifests(namespace: str = REVIEWER_NAMESPACE, name: str = REVIEWER) -> list[dict]:
    """The reviewer's namespace, service account and its binding to ``system:auth-delegator``."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": f"{namespace}-{name}"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
    ]


def api_server_url(cluster) -> str:
    """The kind API server as a container on the node's Docker networks reaches it."""
    return f"https://{cluster.node}:{API_PORT}"


def cluster_ca(cluster) -> str:
    """The cluster's CA certificate (PEM), read from the kind node."""
    r = subprocess.run(["docker", "exec", cluster.node, "cat", CA_PATH], capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or "BEGIN CERTIFICATE" not in r.stdout:
        raise EnvironmentProblem("kind cluster CA", f"{cluster.node}:{CA_PATH}: exit {r.returncode} "
                                                    f"{redact(r.stderr.strip())[-300:]}")
    return r.stdout


def reviewer_jwt(cluster) -> Secret:
    """The reviewer's manifests applied, and a token for it (TokenRequest API)."""
    cluster.apply(reviewer_manifests())
    token = cluster.kubectl("-n", REVIEWER_NAMESPACE, "create", "token", REVIEWER, f"--duration={REVIEWER_TTL}").strip()
    if token.count(".") != 2:
        raise EnvironmentProblem("kubectl create token", "the answer is not a JWT")
    return Secret(token, "Vault's token reviewer JWT")


def configure(vault: Vault, cluster) -> str:
    """Vault's Kubernetes auth against ``cluster`` (module docstring; the role is bound per
    release: :meth:`~meshcert.world.vault.Vault.bind_kubernetes_role`); returns the API server
    URL Vault was given."""
    host = api_server_url(cluster)
    vault.configure_kubernetes(host, cluster_ca(cluster), reviewer_jwt(cluster))
    return host
