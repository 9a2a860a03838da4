"""meshcert's own tests of the HELM checks and of the pod runner they run charts on.

- the reference chart passes every HELM render clause and lints clean;
- each broken variant (fixtures/charts/<variant>.patch, applied to a copy of the reference
  chart) fails exactly the clause its one defect breaks (a ClauseFailure with that id, the
  rendered manifests saved as evidence) and passes the others;
- the patches are applied in pure Python: exactly, at a moved line too, and a patch that no
  longer applies fails with one line naming it and the fix;
- a chart's sidecar settings are read the same whatever the convention (flags in args, in
  TS_EXTRA_ARGS, in a script with $VAR, or environment variables);
- the pod runner resolves env as the kubelet does (the engine tests of pods:
  tests/engine/test_chart_pods.py).
"""

import shutil
import signal

import pytest

from meshcert import cli
from meshcert.checks import ClauseFailure
from meshcert.checks import helm_pod as hp
from meshcert.checks import helm_render as hr
from meshcert.k8s import chart as h
from meshcert.k8s import podrunner
from meshcert.k8s.chartpatch import PatchDoesNotApply, apply_unified_diff, variant_chart
from tests.common.charts import VARIANT_PATCHES, VARIANTS, broken_chart
from tests.common.faults import aims_at, param


# ----------------------------------------------------------------------------- render clauses
def test_reference_chart_passes_every_render_clause(tmp_path):
    chart = h.Chart(h.REFERENCE_CHART, log_root=tmp_path)
    for check in hr.RENDER_CHECKS.values():
        check(chart)
    assert not any(tmp_path.iterdir()), "a passing check saves nothing"


def test_reference_chart_lints_clean():
    out = h.helm("lint", "--strict", str(h.REFERENCE_CHART), "--set", "connectivity.enabled=true",
                 "--set", "connectivity.controlServer=https://headscale.example.com")
    assert "0 chart(s) failed" in out


def test_the_five_variants_are_there():
    assert set(VARIANTS) == {"sidecar-when-disabled", "wrong-secret-key", "login-server-always",
                             "no-controller-proxy", "accept-routes-ignored"}
    assert all(c.startswith("HELM-") for c in VARIANTS.values())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_broken_variant_is_the_reference_chart_with_one_changed_template(variant, tmp_path):
    ref, var = h.REFERENCE_CHART, broken_chart(variant, tmp_path)
    files = {p.relative_to(ref) for p in ref.rglob("*") if p.is_file()} | \
        {p.relative_to(var) for p in var.rglob("*") if p.is_file()}
    differ = sorted(str(f) for f in files if not ((ref / f).is_file() and (var / f).is_file()
                                                  and (ref / f).read_bytes() == (var / f).read_bytes()))
    assert differ[0] == "Chart.yaml" and len(differ) == 2 and differ[1].startswith("templates/"), (
        f"{variant} must be the reference chart with its own name and one template changed; differing files: "
        f"{differ} (fixtures/charts/{variant}.patch)")


@pytest.mark.parametrize("variant", [param(v, "chart", v, VARIANTS[v], VARIANT_PATCHES[v].defect)
                                     for v in sorted(VARIANTS)])
def test_broken_variant_is_caught_by_its_clause_and_only_by_it(variant, tmp_path, caught):
    cid = VARIANTS[variant]
    chart = h.Chart(broken_chart(variant, tmp_path), log_root=tmp_path / "logs")
    with pytest.raises(ClauseFailure) as ei:
        hr.RENDER_CHECKS[cid](chart)
    assert ei.value.clause == cid and str(ei.value).startswith(f"[{cid}]")
    assert ei.value.logs is not None and sorted(p.name for p in ei.value.logs.iterdir())[:2] == [
        "01-manifests.yaml", "01-values.yaml"], "the rendered manifests are saved as the failure's evidence"
    for other, check in hr.RENDER_CHECKS.items():
        if other != cid:
            check(chart)  # the variant's defect is its only one
    caught(ei.value.clause)


# ----------------------------------------------------------------------------- the variant patches
def test_a_patch_applies_where_its_hunk_moved_to(tmp_path):
    ref = tmp_path / "ref"
    shutil.copytree(h.REFERENCE_CHART, ref)
    dep = ref / "templates" / "deployment.yaml"
    dep.write_text("{{/* two lines added above */}}\n{{/* every hunk */}}\n" + dep.read_text())
    out = variant_chart(VARIANT_PATCHES["no-controller-proxy"], tmp_path / "v", reference=ref)
    text = (out / "templates" / "deployment.yaml").read_text()
    assert text.startswith("{{/* two lines added above */}}") and "SUT_PROXY" not in text


def test_a_patch_that_no_longer_applies_fails_with_one_line_naming_it_and_the_fix(tmp_path):
    ref = tmp_path / "ref"
    shutil.copytree(h.REFERENCE_CHART, ref)
    dep = ref / "templates" / "deployment.yaml"
    dep.write_text(dep.read_text().replace("- name: SUT_PROXY", "- name: SUT_PROXY_URL"))
    with pytest.raises(PatchDoesNotApply) as ei:
        variant_chart(VARIANT_PATCHES["no-controller-proxy"], tmp_path / "v", reference=ref)
    msg = str(ei.value)
    assert "\n" not in msg and "no-controller-proxy.patch" in msg and "templates/deployment.yaml" in msg
    assert "no longer matches the reference chart" in msg and "(fix: remake it:" in msg
    assert (tmp_path / "v" / "templates" / "deployment.yaml").read_text() == dep.read_text(), "nothing half-applied"


def test_unified_diff_edge_cases(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\nthree")  # no newline at the end
    (tmp_path / "gone.txt").write_text("x\n")
    diff = ("Caught-by: X\n\n--- a/a.txt\n+++ b/a.txt\n@@ -2,2 +2,2 @@\n two\n-three\n\\ No newline at end of file\n"
            "+three\n--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n--- /dev/null\n+++ b/new/n.txt\n@@ -0,0 +1 @@\n+n\n")
    assert apply_unified_diff(diff, tmp_path) == ["a.txt", "gone.txt", "new/n.txt"]
    assert (tmp_path / "a.txt").read_text() == "one\ntwo\nthree\n"
    assert not (tmp_path / "gone.txt").exists() and (tmp_path / "new" / "n.txt").read_text() == "n\n"
    with pytest.raises(PatchDoesNotApply, match="bad path"):
        apply_unified_diff("--- a/../x\n+++ b/../x\n@@ -1 +1 @@\n-a\n+b\n", tmp_path)
    with pytest.raises(PatchDoesNotApply, match="holds no file diff"):
        apply_unified_diff("Caught-by: X\n", tmp_path)


@aims_at("chart", "does-not-render", "HELM-1", "a chart whose template fails to render")
def test_a_chart_that_does_not_render_fails_the_clause_naming_helm(tmp_path, caught):
    broken = tmp_path / "chart"
    (broken / "templates").mkdir(parents=True)
    (broken / "Chart.yaml").write_text("apiVersion: v2\nname: broken\nversion: 0.1.0\n")
    (broken / "values.yaml").write_text("connectivity: {}\n")
    (broken / "templates" / "x.yaml").write_text('{{ fail "no sidecar for you" }}\n')
    with pytest.raises(ClauseFailure) as ei:
        hr.helm1_sidecar_rendered(h.Chart(broken))
    assert ei.value.clause == "HELM-1" and "no sidecar for you" in str(ei.value)
    caught(ei.value.clause)


@aims_at("chart", "no-workload", "HELM-6", "a chart that renders no workload")
def test_a_chart_with_no_workload_fails_the_clause(tmp_path, caught):
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: empty\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(ClauseFailure) as ei:
        hr.helm6_socket_shared(h.Chart(chart))
    assert "exactly one workload" in str(ei.value) and "ConfigMap/x" in str(ei.value)
    caught(ei.value.clause)


# ----------------------------------------------------------------------------- a user's chart
def test_certify_chart_hands_pytest_the_folder_and_refuses_a_non_chart(monkeypatch, tmp_path, capsys):
    """`meshcert certify --chart DIR` runs the conformance tests with ``--chart <absolute DIR>``
    (pytest runs in the checkout); a folder without Chart.yaml is refused before anything starts."""
    seen: list[list[str]] = []
    monkeypatch.setattr(cli, "cmd_setup", lambda *a: None)
    monkeypatch.setattr(cli, "_pytest", lambda args, cwd=None: seen.append(args) or 0)
    user = broken_chart("wrong-secret-key", tmp_path)
    monkeypatch.chdir(tmp_path)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGPIPE, signal.SIGTERM, signal.SIGINT)}
    try:  # cli.main sets process-wide signal handlers: this pytest process gets its own back
        cli.main(["certify", "--chart", user.name, "--report-dir", str(tmp_path / "r")])
        args = seen[0]
        assert args[args.index("--chart") + 1] == str(user.resolve())
        seen.clear()
        assert cli.main(["certify", "--chart", str(tmp_path), "--report-dir", str(tmp_path / "r2")]) == 2
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert not seen and f"--chart: {tmp_path} is not a chart (no Chart.yaml)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- reading a sidecar
def _c(**kw):
    return {"name": "tailscale", "image": "tailscale/tailscale:v1", **kw}


@pytest.mark.parametrize("container", [
    _c(args=["--login-server=https://hs.example", "--hostname=agent", "--accept-routes"]),
    _c(args=["--login-server", "https://hs.example", "--hostname", "agent", "--accept-routes=true"]),
    _c(env=[{"name": "TS_EXTRA_ARGS", "value": "--login-server=https://hs.example --accept-routes"},
            {"name": "TS_HOSTNAME", "value": "agent"}]),
    _c(command=["/bin/sh", "-c", 'tailscale up --login-server="$LS" --hostname=${HN} --accept-routes=$(AR)'],
       env=[{"name": "LS", "value": "https://hs.example"}, {"name": "HN", "value": "agent"},
            {"name": "AR", "value": "true"}]),
], ids=["flags", "flags-with-space", "containerboot-env", "script-with-vars"])
def test_sidecar_settings_are_read_whatever_the_convention(container):
    assert h.setting(container, "login-server")[0] == "https://hs.example"
    assert h.setting(container, "hostname")[0] == "agent"
    assert h.truthy(h.setting(container, "accept-routes")[0])
    assert h.setting(container, "advertise-tags") == (None, "absent")


def test_userspace_and_socket_defaults():
    assert not h.userspace(_c(args=["--tun=tailscale0"]))
    assert h.userspace(_c(env=[{"name": "TS_USERSPACE", "value": "true"}]))
    assert h.socket_path(_c()) == h.DEFAULT_SOCKET
    assert h.socket_path(_c(env=[{"name": "TS_SOCKET", "value": "/tmp/tailscaled.sock"}])) == "/tmp/tailscaled.sock"
    assert h.runs_tailscale({"name": "x", "image": "busybox", "command": ["tailscaled", "--state=mem:"]})
    assert not h.runs_tailscale({"name": "controller", "image": "legator/runtime:1"})


def test_split_image():
    assert hp.split_image("meshcert/tailscale:99bc8") == ("meshcert/tailscale", "99bc8")
    assert hp.split_image("registry:5000/a/b") == ("registry:5000/a/b", "")
    assert hp.split_image("registry:5000/a/b:v1") == ("registry:5000/a/b", "v1")


# ----------------------------------------------------------------------------- the pod runner (no engine)
SECRETS = {"auth": {"key": b"hskey-secret-value"}}
FIELDS = {"metadata.name": "p", "metadata.namespace": "ns", "status.podIP": "10.0.0.9", "labels:app": "agent"}


def _env(spec, secrets=SECRETS, cms=None):
    return podrunner.resolve_env(spec, secrets=secrets, config_maps=cms or {}, namespace="ns", fields=FIELDS)


def test_env_resolved_from_the_mappings():
    env = _env({"env": [
        {"name": "A", "value": "a"},
        {"name": "B", "value": "$(A)-$(UNSET)-$$(A)"},
        {"name": "K", "valueFrom": {"secretKeyRef": {"name": "auth", "key": "key"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "O", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": True}}},
    ], "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}]}, cms={"cm": {"x": "1"}})
    assert env == {"CM_x": "1", "A": "a", "B": "a-$(UNSET)-$(A)", "K": "hskey-secret-value", "IP": "10.0.0.9",
                   "APP": "agent"}


@pytest.mark.parametrize("ref,reason", [
    ({"name": "gone", "key": "key"}, 'secret "gone" is not in the pod runner'),
    ({"name": "auth", "key": "other"}, "Secret ns/auth has no key other"),
])
def test_a_missing_secret_or_key_is_an_error_not_an_imitated_kubelet_status(ref, reason):
    """The pod runner does not imitate the kubelet's CreateContainerConfigError (kind shows the real one)."""
    with pytest.raises(podrunner.PodRunError, match=reason) as ei:
        _env({"env": [{"name": "TS_AUTHKEY", "valueFrom": {"secretKeyRef": ref}}]})
    assert "CreateContainerConfigError" not in str(ei.value)


def test_pod_template_wants_exactly_one_workload():
    dep = {"kind": "Deployment", "metadata": {"name": "d", "namespace": "n"},
           "spec": {"template": {"metadata": {}, "spec": {"containers": [{"name": "c"}]}}}}
    tpl, ns = podrunner.pod_template([{"kind": "Service"}, dep])
    assert tpl["spec"]["containers"][0]["name"] == "c" and ns == "n"
    with pytest.raises(podrunner.PodRunError, match="exactly one workload"):
        podrunner.pod_template([dep, dep])


# ----------------------------------------------------------------------------- on the engine






