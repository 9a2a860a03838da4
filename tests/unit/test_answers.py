"""The answered exec (meshcert.world.base.Answers): a command whose output the caller needs is
kept in a file in the container and read again when docker exec lost it (moby/moby#27289). The
wrapper scripts themselves run here in a local `sh`, standing in for the container's."""

import os
import re
import subprocess

import pytest

from meshcert.errors import EnvironmentProblem
from meshcert.k8s.kind import KubectlCluster
from meshcert.world.base import _ANSWER_SH, ANSWER_DIRS, ANSWER_REREADS, Answers, WorldError


def local_sh(container, argv, **kw):
    """Run ``argv`` here, as docker exec would in the container: merged output, exit code."""
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env={**os.environ, **kw.get("environment", {})})
    return r.returncode, r.stdout.decode()


class Losing:
    """An exec that loses the first ``lose`` outputs (exit codes are kept), else runs locally."""

    def __init__(self, lose: int = 0):
        self.lose, self.calls = lose, []

    def __call__(self, container, argv, **kw):
        self.calls.append(argv)
        code, out = local_sh(container, argv, **kw)
        if self.lose:
            self.lose -= 1
            return code, ""
        return code, out


def kept(argv) -> list[str]:
    """The answer files named in an answered exec's arguments that exist now."""
    names = [a for a in argv if re.fullmatch(r"meshcert-answer-[0-9a-f]{16}", a)]
    return [f"{d}/{n}" for n in names for d in ANSWER_DIRS.split() if os.path.exists(f"{d}/{n}")]


def test_an_answer_comes_back_once_and_its_file_goes_with_the_next_answered_exec():
    run = Losing()
    a = Answers()
    assert a.exec(None, ["sh", "-c", "echo hi; exit 3"], "box", run=run) == (3, "hi\n")
    first = kept(run.calls[0])
    assert len(first) == 1 and first[0].startswith(ANSWER_DIRS.split()[0]), "kept until it is known to be read"
    assert os.stat(first[0]).st_mode & 0o077 == 0, "an answer may hold a key: only its owner reads it"
    assert a.exec(None, ["printf", "%s", "$X"], "box", run=run, environment={"X": "1"}) == (0, "$X")
    assert not os.path.exists(first[0]), "the next answered exec removed the file already read"
    assert len(run.calls) == 2, "no second exec when the output came back"
    for f in kept(run.calls[1]):
        os.unlink(f)


def test_a_lost_output_is_read_again_from_its_file():
    run = Losing(lose=2)  # the command's output and the first read-back are both lost
    code, out = Answers().exec(None, ["sh", "-c", 'echo \'{"key": "k"}\''], "headscale", run=run)
    assert (code, out) == (0, '{"key": "k"}\n')
    assert len(run.calls) == 3 and all("exec cat" in c[2] for c in run.calls[1:])
    for f in kept(run.calls[0]):
        os.unlink(f)


def test_a_command_that_printed_nothing_reads_as_nothing_and_leaves_no_file():
    run = Losing()
    assert Answers().exec(None, ["sh", "-c", "exit 1"], "box", run=run) == (1, "")
    assert not kept(run.calls[0]) and len(run.calls) == 2, "one read-back tells empty from lost"


def test_an_output_lost_every_time_is_one_clear_world_error():
    calls = []

    def run(container, argv, **kw):  # the file is there (the read-back exits 0), and every output is lost
        calls.append(argv[2][:3])
        return 0, ""

    with pytest.raises(WorldError, match=r"headscale: `headscale users create meshcert` exited 0, and its output, "
                                         r"kept as meshcert-answer-\w+ in /dev/shm /tmp there, came back empty "
                                         rf"{ANSWER_REREADS + 1} times"):
        Answers().exec(None, ["headscale", "users", "create", "meshcert"], "headscale", run=run)
    assert len(calls) == 1 + ANSWER_REREADS


def test_with_no_writable_place_the_command_runs_as_is(tmp_path):
    """No writable answer directory (here: none that exists): the command runs without a file."""
    script = _ANSWER_SH.replace(ANSWER_DIRS, f"{tmp_path}/a {tmp_path}/b")
    code, out = local_sh(None, ["sh", "-c", script, "sh", "meshcert-answer-0123456789abcdef", "0",
                                "sh", "-c", "echo still; exit 4"])
    assert (code, out) == (4, "still\n")
    assert not list(tmp_path.iterdir())


def test_a_container_without_sh_runs_the_command_as_is_from_then_on():
    calls = []

    def run(container, argv, **kw):
        calls.append(argv)
        if argv[0] == "sh":
            return 126, ('OCI runtime exec failed: exec failed: unable to start container process: exec: "sh": '
                         'executable file not found in $PATH: unknown\r\n')
        return 0, "out"

    a = Answers()
    assert a.exec(None, ["tool"], "distroless", run=run) == (0, "out")
    assert a.exec(None, ["tool"], "distroless", run=run) == (0, "out")
    assert calls[1:] == [["tool"], ["tool"]] and calls[0][0] == "sh"


class _Cluster:
    """A cluster whose kubectl (a `docker exec` into the node) loses the first ``lose`` outputs."""

    def __init__(self, lose: int):
        self.lose, self.runs = lose, 0
        self.kubectl = KubectlCluster.kubectl.__get__(self)

    def kubectl_run(self, *args, **kw):
        self.runs += 1
        if self.lose:
            self.lose -= 1
            return 0, "", ""
        return 0, '{"items": []}', ""


def test_a_kubectl_read_that_printed_nothing_is_read_again():
    c = _Cluster(lose=2)
    assert c.kubectl("get", "pods", "-o", "json") == '{"items": []}' and c.runs == 3
    c = _Cluster(lose=1)
    assert c.kubectl("-n", "ns", "get", "pods", "-o", "json") == '{"items": []}' and c.runs == 2
    c = _Cluster(lose=1)
    assert c.kubectl("apply", "-f", "-") == "" and c.runs == 1, "only reads that always print are read again"


def test_a_kubectl_read_lost_every_time_is_one_clear_error():
    c = _Cluster(lose=99)
    with pytest.raises(EnvironmentProblem, match=rf"kubectl get pods -o.*printed nothing {ANSWER_REREADS + 1} times"):
        c.kubectl("get", "pods", "-o", "json")
    assert c.runs == ANSWER_REREADS + 1


def test_an_api_read_through_kubectl_is_get_raw_with_its_query():
    seen = []

    class C(KubectlCluster):
        def kubectl_run(self, *args, **kw):
            seen.append(args)
            return 0, '{"items": [1]}', ""

    got = C().api_get("/api/v1/namespaces/ns/pods", {"labelSelector": "app=a,b in (c)"})
    assert got == {"items": [1]}
    assert seen == [("get", "--raw", "/api/v1/namespaces/ns/pods?labelSelector=app%3Da%2Cb+in+%28c%29")]
