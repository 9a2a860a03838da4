"""A kind cluster of meshcert's reads its API server straight from this process
(KindCluster.api_get): the kubeconfig kind wrote gives the server, the CA and the admin's client
certificate, which exists on disk only while the TLS context reads it."""

import base64
import datetime

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshcert.errors import EnvironmentProblem
from meshcert.k8s import cluster, kind


def _cert() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-admin")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@pytest.fixture
def kc(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "kubeconfig_dir", lambda: tmp_path)
    return kind.KindCluster("mc-unit", "meshcert/kind-node:x", client=object())


def test_the_api_server_and_its_tls_come_from_the_kubeconfig_and_no_key_file_stays(kc, tmp_path):
    cert, key = _cert()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    kc.kubeconfig.write_text(yaml.safe_dump({
        "clusters": [{"name": "kind-mc-unit", "cluster": {"server": "https://127.0.0.1:40123",
                                                          "certificate-authority-data": b64(cert)}}],
        "users": [{"name": "kind-mc-unit", "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}]}))
    server, ctx = kc._api()
    assert server == "https://127.0.0.1:40123" and ctx.verify_mode.name == "CERT_REQUIRED"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mc-unit.yaml"], "the client key is not left on disk"
    assert kc._api()[1] is ctx, "read once per cluster"


def test_an_unreadable_kubeconfig_is_one_clear_error(kc):
    kc.kubeconfig.write_text("clusters: []\n")
    with pytest.raises(EnvironmentProblem, match=r"kind cluster mc-unit: its kubeconfig .*mc-unit.yaml.*unreadable"):
        kc.api_get("/api/v1/namespaces/x/pods")
