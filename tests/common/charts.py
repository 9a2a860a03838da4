"""The broken-chart variants (fixtures/charts/*.patch) for meshcert's own HELM tests."""

from __future__ import annotations

from pathlib import Path

from meshcert.k8s.chartpatch import load_variants, variant_chart
from tests.common.paths import FIXTURES

VARIANT_PATCHES = load_variants(FIXTURES / "charts")
VARIANTS = {name: v.clause for name, v in VARIANT_PATCHES.items()}


def broken_chart(variant: str, tmp_path: Path) -> Path:
    """The reference chart with the variant's defect, in a fresh folder."""
    return variant_chart(VARIANT_PATCHES[variant], tmp_path / f"chart-{variant}")
