"""The Docker engine: use the one that answers, or install and start Debian's dockerd.

Rules (DESIGN.md §3, §8): keep dockerd's iptables on -- with ``--iptables=false`` every
Docker network routes to every other and ACL/route negatives become meaningless. The
isolation between two of our networks is probed before a world is built.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import docker
import docker.errors

from meshcert.errors import EnvironmentProblem
from meshcert.toolchain import progress
from meshcert.toolchain.paths import cache_dir

DEBIAN_PACKAGES = {
    # binary that proves the package is there -> Debian package
    "dockerd": "docker.io",
    "iptables": "iptables",
    "debootstrap": "debootstrap",
    "nft": "nftables",
    "nsenter": "util-linux",
}

_client: docker.DockerClient | None = None


def _ping() -> docker.DockerClient | None:
    try:
        c = docker.from_env(timeout=120)
        c.ping()
        return c
    except Exception:
        return None


def missing_packages() -> list[str]:
    return sorted({pkg for binary, pkg in DEBIAN_PACKAGES.items()
                   if not shutil.which(binary) and not os.path.exists(f"/usr/sbin/{binary}")})


def apt_install(packages: list[str]) -> None:
    if not packages:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise EnvironmentProblem("Debian packages", f"missing {' '.join(packages)} and cannot apt-get install (not root on Debian)",
                                 f"install {' '.join(packages)} yourself")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log = str(cache_dir() / "apt.log")
    with progress.step(f"apt-get install {' '.join(packages)}"):
        progress.run_streamed(["apt-get", "update", "-q"], "apt-get update", env=env, log_path=log)
        progress.run_streamed(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                              "apt-get install", env=env, log_path=log)


def _pid_alive(pidfile: str) -> bool:
    try:
        pid = int(Path(pidfile).read_text().strip())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


def _start_dockerd() -> None:
    # A dockerd/containerd that was killed leaves pid files that block the next start.
    for pidfile in ("/var/run/docker.pid", "/run/docker/containerd/containerd.pid"):
        if os.path.exists(pidfile) and not _pid_alive(pidfile):
            os.unlink(pidfile)
    log = cache_dir() / "dockerd.log"
    progress.say(f"starting dockerd (log: {log})")
    with open(log, "ab") as out:
        subprocess.Popen(["dockerd"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, close_fds=True)


def ensure_engine(install: bool = True) -> docker.DockerClient:
    """Return a client of an answering engine, installing/starting one when we may."""
    global _client
    if _client is not None:
        return _client
    c = _ping()
    if c is None:
        if os.environ.get("DOCKER_HOST"):
            raise EnvironmentProblem("Docker engine", f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer",
                                     "start that engine or unset DOCKER_HOST")
        if not install or os.geteuid() != 0 or not os.path.exists("/etc/debian_version"):
            raise EnvironmentProblem("Docker engine", "no engine answers on the default socket",
                                     "start a Docker engine (or run meshcert as root on Debian to let it start one)")
        apt_install(missing_packages())
        with progress.step("starting the Docker engine"):
            _start_dockerd()
            deadline = time.monotonic() + 90
            while (c := _ping()) is None:
                if time.monotonic() > deadline:
                    raise EnvironmentProblem("Docker engine", "dockerd did not answer within 90 s",
                                             f"read {cache_dir() / 'dockerd.log'}")
                time.sleep(0.5)
    elif install:
        apt_install(missing_packages())
    _client = c
    return c


def engine_summary(c: docker.DockerClient) -> str:
    v = c.version()
    info = c.info()
    return f"Docker {v.get('Version')} (API {v.get('ApiVersion')}), storage {info.get('Driver')}"
