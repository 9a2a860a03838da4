"""The parts of the kind path that need no cluster: the kind config in the repo is valid for
meshcert, the image list, the node image decision (never a pull, never a dial out unless
allowed), and the manifests applied to a cluster."""

import base64

import pytest
import yaml

from meshcert.checks import kind_vault
from meshcert.checks.helm_pod import CA_CONFIGMAP
from meshcert.k8s import chart as h
from meshcert.k8s import kind, vaultauth
from meshcert.secrets import Secret, redact
from meshcert.toolchain.components import COMPONENTS


def test_the_repo_kind_config_is_valid():
    doc = kind.load_config()
    assert kind.config_problems(doc) == []
    assert doc["nodes"][0]["role"] == "control-plane"


@pytest.mark.parametrize("change,problem", [
    (lambda d: d.update(kind="Pod"), "kind must be Cluster"),
    (lambda d: d.update(apiVersion="kind.x-k8s.io/v1alpha3"), "apiVersion must be kind.x-k8s.io/v1alpha4"),
    (lambda d: d["nodes"].append({"role": "control-plane"}), "exactly one control-plane"),
    (lambda d: d["nodes"].append({"role": "boss"}), "neither control-plane nor worker"),
    (lambda d: d["nodes"][0].update(image="kindest/node:v1.34.0"), "chosen at run time"),
    (lambda d: d["networking"].update(apiServerAddress="0.0.0.0"), "must be loopback"),
    (lambda d: d["networking"].update(podSubnet="10.20.0.0/16"), "overlaps meshcert's VLANs"),
    (lambda d: d["networking"].update(serviceSubnet="10.244.128.0/24"), "overlap"),
    (lambda d: d["nodes"][0].update(extraPortMappings=[{"containerPort": 80, "hostPort": 80}]), "beyond loopback"),
    (lambda d: d.update(nodez=[]), "unknown field 'nodez'"),
])
def test_config_problems_are_named(change, problem):
    doc = kind.load_config()
    change(doc)
    assert any(problem in p for p in kind.config_problems(doc)), kind.config_problems(doc)


def test_the_pinned_kind_matches_the_pinned_kubernetes():
    """kind v0.33's default node is Kubernetes 1.37 (pkg/apis/config/defaults/image.go); the
    node image meshcert builds is the Kubernetes pinned in tools/kubernetes."""
    assert COMPONENTS["kind"].version == "v0.33.0"
    assert COMPONENTS["kubernetes"].version.startswith("v1.37.")


def test_images_to_load_are_the_charts_two_images():
    images = {"tailscale": "meshcert/tailscale:1", "sut-reference": "meshcert/sut-reference:2", "host": "h"}
    assert kind.images_to_load(images) == ["meshcert/tailscale:1", "meshcert/sut-reference:2"]
    assert kind.images_to_load(images, "me/runtime:dev") == ["meshcert/tailscale:1", "me/runtime:dev"]


class _Images:
    def __init__(self, tags):
        self.tags = tags

    def list(self, name=None):
        return [type("I", (), {"tags": [t]})() for t in self.tags if t.startswith(name or "")]

    def get(self, ref):
        import docker.errors
        if ref not in self.tags:
            raise docker.errors.ImageNotFound(ref)


class _Engine:
    def __init__(self, *tags):
        self.images = _Images(list(tags))


def test_meshcerts_node_image_is_built_here_when_the_tools_are_there():
    a = kind.node_image_availability(_Engine("meshcert/host:1"), env={}, prerequisites=lambda: [])
    assert a.ok and a.node_image is None and "built here from pinned inputs" in a.reason


def test_missing_build_tools_mean_cannot_in_one_line():
    a = kind.node_image_availability(_Engine(), env={}, prerequisites=lambda: ["debootstrap", "gcc"])
    assert not a.ok and a.node_image is None
    assert a.reason == "kind cannot run here: building the node image needs debootstrap, gcc"


def test_an_explicit_node_image_must_be_on_the_engine():
    env = {"MESHCERT_KIND_NODE_IMAGE": "kindest/node:v1.37.0"}
    a = kind.node_image_availability(_Engine("kindest/node:v1.37.0"), env=env, prerequisites=lambda: ["go"])
    assert a.ok and a.node_image == "kindest/node:v1.37.0"
    a = kind.node_image_availability(_Engine(), env=env, prerequisites=lambda: [])
    assert not a.ok and "MESHCERT_KIND_NODE_IMAGE=kindest/node:v1.37.0 is not on the engine" in a.reason


def test_the_effective_config_adds_what_meshcerts_node_image_needs():
    doc = kind.load_config()
    ours = kind.effective_config(doc, node_image_is_ours=True)
    assert ours["networking"]["disableDefaultCNI"] is True and ours["networking"]["kubeProxyMode"] == "none"
    assert ours["networking"]["podSubnet"] == doc["networking"]["podSubnet"], "the user's settings stay"
    patches = [yaml.safe_load(p) for p in ours["kubeadmConfigPatches"]]
    assert {"kind": "KubeletConfiguration", "failCgroupV1": False} in patches
    init = next(p for p in patches if p["kind"] == "InitConfiguration")
    assert set(init["skipPhases"]) == {"preflight", "addon/kube-proxy", "addon/coredns"}
    assert kind.config_problems(ours) == []
    assert "kubeadmConfigPatches" not in doc, "the loaded config is not modified"
    foreign = kind.effective_config(doc, node_image_is_ours=False)
    assert "disableDefaultCNI" not in foreign["networking"]
    assert [yaml.safe_load(p) for p in foreign["kubeadmConfigPatches"]] == [
        {"kind": "KubeletConfiguration", "failCgroupV1": False}]


def test_cluster_manifests_carry_the_key_only_in_the_secret():
    chart = h.Chart(h.REFERENCE_CHART)
    values = h.guide_values(controlServer="https://control:8443", authKeySecret="hs-auth", authKeySecretKey="key")
    values["hostAliases"] = [{"ip": "172.30.0.5", "hostnames": ["control"]}]
    rendered = chart.render(values).docs
    key = Secret("hskey-auth-" + "x" * 40, "test key")
    docs = kind.cluster_manifests(rendered, namespace="meshcert-agent", secret_name="hs-auth", secret_key="key",
                                  auth_key=key, ca_configmap=CA_CONFIGMAP, ca_pem=b"-----BEGIN CERTIFICATE-----\n")
    kinds = [d["kind"] for d in docs]
    assert kinds[:3] == ["Namespace", "Secret", "ConfigMap"] and "Deployment" in kinds
    assert all(d["metadata"]["namespace"] == "meshcert-agent" for d in docs[1:])
    secret = docs[1]
    assert base64.b64decode(secret["data"]["key"]).decode() == key.reveal()
    text = yaml.safe_dump_all(docs)
    assert key.reveal() not in text  # only base64 inside the Secret
    assert key.reveal() not in redact(str(docs))
    dep = next(d for d in docs if d["kind"] == "Deployment")
    spec = dep["spec"]["template"]["spec"]
    assert spec["hostAliases"] == [{"ip": "172.30.0.5", "hostnames": ["control"]}]
    side = next(c for c in spec["containers"] if c["name"] == "tailscale")
    assert h.env_item(side, "TS_AUTHKEY")["valueFrom"]["secretKeyRef"] == {"name": "hs-auth", "key": "key"}
    assert rendered[0]["metadata"].get("namespace") != "meshcert-agent", "the rendered docs are not modified"


def test_this_machine_gives_one_skip_line_or_a_node_image():
    """What `pytest -m kind` prints here: one line, never a traceback."""
    reason = kind.skip_reason()
    assert reason is None or (reason.startswith("kind cannot run here: ") and "\n" not in reason)


# ------------------------------------------------------------------ the chart's Vault settings (issue 13)
def _controller_and_spec(values: dict) -> tuple[dict, dict, list[dict]]:
    docs = h.Chart(h.REFERENCE_CHART).render(values).docs
    dep = next(d for d in docs if d["kind"] == "Deployment")
    spec = dep["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == "controller"), spec, docs


def test_the_chart_renders_no_vault_setting_unless_given_an_address():
    ctl, spec, docs = _controller_and_spec(h.guide_values())
    assert not [e for e in ctl.get("env") or [] if e["name"].startswith("VAULT_")]
    assert "serviceAccountName" not in spec and "automountServiceAccountToken" not in spec
    assert [d["kind"] for d in docs] == ["Deployment"]


def test_the_chart_tells_the_controller_to_log_in_with_its_service_account_token():
    values = {**h.guide_values(), "serviceAccount": {"create": True},
              "vault": {"address": "https://172.30.0.9:8200", "auth": "kubernetes", "kubernetesRole": "agent",
                        "caBundle": {"configMap": "vault-ca", "key": "ca.pem"}}}
    ctl, spec, docs = _controller_and_spec(values)
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert spec["serviceAccountName"] == sa["metadata"]["name"] != ""
    assert "automountServiceAccountToken" not in spec  # the default: the kubelet projects the token
    env = h.literal_env(ctl)
    assert {k: v for k, v in env.items() if k.startswith("VAULT_")} == {
        "VAULT_ADDR": "https://172.30.0.9:8200", "VAULT_AUTH": "kubernetes", "VAULT_K8S_ROLE": "agent",
        "VAULT_K8S_MOUNT": "kubernetes", "VAULT_K8S_TOKEN_FILE": "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "VAULT_CACERT": "/etc/vault-ca/ca.pem"}
    mounts = {m["name"]: m["mountPath"] for m in ctl["volumeMounts"]}
    assert mounts["run-tmp"] == "/tmp" and mounts["vault-ca"] == "/etc/vault-ca"
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["run-tmp"] == {"name": "run-tmp", "emptyDir": {}} and vols["vault-ca"]["configMap"]["name"] == "vault-ca"
    assert "vault-approle" not in vols


def test_the_chart_mounts_the_approle_secret_when_told():
    values = {**h.guide_values(), "vault": {"address": "https://v:8200", "auth": "approle", "approleSecret": "va"}}
    ctl, spec, _ = _controller_and_spec(values)
    env = h.literal_env(ctl)
    assert env["VAULT_AUTH"] == "approle" and env["VAULT_ROLE_ID_FILE"] == "/run/secrets/vault/role-id"
    assert "VAULT_K8S_ROLE" not in env and "serviceAccountName" not in spec
    assert {v["name"]: v for v in spec["volumes"]}["vault-approle"]["secret"]["secretName"] == "va"


@pytest.mark.parametrize("vault, sa, named", [
    ({"address": "https://v:8200", "auth": "kubernetes"}, {}, "vault.kubernetesRole"),
    ({"address": "https://v:8200", "auth": "approle"}, {}, "vault.approleSecret"),
    ({"address": "https://v:8200", "kubernetesRole": "agent"}, {"automountToken": False}, "serviceAccount.automountToken"),
    ({"address": "https://v:8200", "auth": "ldap"}, {}, "'/vault/auth': value must be one of 'kubernetes', 'approle'"),
])
def test_chart_vault_values_that_cannot_work_are_refused_naming_the_value(vault, sa, named):
    with pytest.raises(h.ChartError) as e:
        h.Chart(h.REFERENCE_CHART).render({**h.guide_values(), "vault": vault, "serviceAccount": sa})
    assert named in str(e.value)


def test_vaults_token_reviewer_is_bound_to_auth_delegator_only():
    from_docs = {d["kind"]: d for d in vaultauth.reviewer_manifests()}
    crb = from_docs["ClusterRoleBinding"]
    assert crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                              "name": "system:auth-delegator"}
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": vaultauth.REVIEWER,
                                "namespace": vaultauth.REVIEWER_NAMESPACE}]
    assert set(from_docs) == {"Namespace", "ServiceAccount", "ClusterRoleBinding"}


def test_the_kind_vault_judgement_follows_a_login_through_the_audit_log():
    """Vault's audit entries (shape of vault/audit: a login's auth in the response, a request's
    token by its HMAC'd accessor): the login's metadata, then what its token did."""
    login = {"type": "response", "request": {"path": "auth/kubernetes/login"},
             "response": {"auth": {"accessor": "hmac-a", "policies": ["agent-run", "default"],
                                   "metadata": {"role": "agent", "service_account_name": "sa",
                                                "service_account_namespace": "ns"}}}}
    refused = {"type": "response", "request": {"path": "auth/kubernetes/login"}, "error": "namespace not authorized"}
    child = {"type": "response", "request": {"path": "auth/token/create"}, "auth": {"accessor": "hmac-a"},
             "response": {"auth": {"accessor": "hmac-b"}}}
    other = {"type": "response", "request": {"path": "auth/token/create"}, "auth": {"accessor": "hmac-z"}}
    got = kind_vault.logins([login, refused, child])
    assert [x["error"] for x in got] == ["", "namespace not authorized"]
    assert got[0]["metadata"]["service_account_namespace"] == "ns" and "agent-run" in got[0]["policies"]
    assert kind_vault._by([login, child, other], "auth/token/create", "hmac-a") == [child]
    assert kind_vault._by([child], "auth/token/create", None) == []
