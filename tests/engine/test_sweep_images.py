"""`meshcert sweep --images` removes meshcert's own images this checkout no longer uses, and
nothing else: current images stay, an image built FROM ours (a user's SUT) stays."""

from __future__ import annotations

import io

import docker
import pytest

from meshcert.toolchain import engine, images
from tests.common.cli import meshcert

pytestmark = [pytest.mark.engine]


def _build(c, tag: str, dockerfile: str, labels: dict | None = None) -> None:
    c.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, labels=labels or {})


def test_sweep_images_removes_only_stale_own_images():
    c = engine.ensure_engine()
    current = images.ensure_images(c, tuple(images.recipes()))
    stale, user = "meshcert/host:stale-by-test", "example/user-sut:by-meshcert-test"
    _build(c, stale, f"FROM {current['host']}\nENV MESHCERT_STALE=1\n", {images.LABEL: "host"})
    _build(c, user, f"FROM {current['sut-reference']}\nENV USER_SUT=1\n")  # inherits io.meshcert.image
    try:
        p = meshcert("sweep", "--images", timeout=300)
        assert p.returncode == 0, p.stderr
        assert stale in p.stdout, p.stdout
        with pytest.raises(docker.errors.ImageNotFound):
            c.images.get(stale)
        c.images.get(user)  # a user's image built FROM ours is not meshcert's to remove
        for tag in current.values():
            c.images.get(tag)
    finally:
        for tag in (stale, user):
            try:
                c.images.remove(tag, force=True)
            except docker.errors.ImageNotFound:
                pass
