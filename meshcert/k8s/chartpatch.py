"""Broken variants of the reference chart, kept as unified diffs on it (fixtures/charts/*.patch).

A variant file is a ``-p1`` unified diff on the reference chart's folder (``--- a/templates/x``,
``+++ b/templates/x``, hunks) after a header of ``Key: value`` lines; the header names the clause
that must catch the variant (``Caught-by: HELM-7``) and its defect (``Defect: ...``).
:func:`variant_chart` copies the reference chart into a folder and applies the diff there.

The diff is applied here, in pure Python (Debian's ``patch`` and git are not certain to be on a
user's machine): exact context, no fuzz; a hunk may sit at another line than the one it names
(a change elsewhere in the same file moves it), never on changed text. A patch that no longer
applies raises :class:`PatchDoesNotApply`: one line naming the patch, the file, the hunk and the fix.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from meshcert.errors import InputError
from meshcert.k8s.chart import REFERENCE_CHART

REMAKE = ("remake it: copy meshcert/k8s/charts/reference-agent to a/ and b/, put the defect back into b/ by hand, "
          "then `diff -ruN a b` (dates cut from the ---/+++ lines) under the patch's header lines "
          "(fixtures/charts/README.md)")
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchDoesNotApply(InputError):
    def __init__(self, patch: str, message: str, fix: str = REMAKE):
        super().__init__(f"chart patch {patch}", message, fix)


@dataclass(frozen=True)
class Variant:
    name: str       # the patch's file name without .patch
    clause: str     # the clause that must catch it (header Caught-by)
    defect: str     # one line (header Defect)
    patch: Path


@dataclass
class _Hunk:
    old_start: int
    old: list[str]
    new: list[str]


@dataclass
class _FilePatch:
    old_path: str | None   # None: /dev/null (a new file)
    new_path: str | None   # None: /dev/null (a deleted file)
    hunks: list[_Hunk]


def read_variant(patch: Path) -> Variant:
    """The variant a patch file declares (its header lines before the first ``---``)."""
    patch = Path(patch)
    head: dict[str, str] = {}
    for line in patch.read_text().splitlines():
        if line.startswith("--- "):
            break
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("Caught-by", "Defect"):
            head[key.strip()] = value.strip()
    missing = [k for k in ("Caught-by", "Defect") if not head.get(k)]
    if missing:
        raise InputError(f"chart patch {patch}", f"no {' / '.join(missing)} line before the diff",
                         "start the file with `Caught-by: HELM-n` and `Defect: <one line>`")
    return Variant(patch.name.removesuffix(".patch"), head["Caught-by"], head["Defect"], patch)


def load_variants(folder: Path) -> dict[str, Variant]:
    """Every ``*.patch`` of ``folder``, by variant name."""
    return {v.name: v for v in (read_variant(p) for p in sorted(Path(folder).glob("*.patch")))}


def variant_chart(variant: Variant | Path, dest: Path, reference: Path = REFERENCE_CHART) -> Path:
    """A copy of ``reference`` at ``dest`` (which must not exist) with the variant's patch applied."""
    patch = variant.patch if isinstance(variant, Variant) else Path(variant)
    shutil.copytree(reference, dest)
    apply_unified_diff(patch.read_text(), dest, label=str(patch))
    return dest


def parse_unified_diff(text: str, label: str = "<patch>") -> list[_FilePatch]:
    lines = text.splitlines(keepends=True)
    files: list[_FilePatch] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not (line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")):
            if files and line.startswith(("@@", "+", "-", " ")):
                raise PatchDoesNotApply(label, f"line {i + 1} is outside any hunk: {line.rstrip()!r}")
            i += 1  # header text, `diff -ruN ...`/`index` lines
            continue
        fp = _FilePatch(_path(lines[i][4:], label), _path(lines[i + 1][4:], label), [])
        i += 2
        while i < len(lines) and lines[i].startswith("@@"):
            m = _HUNK.match(lines[i])
            if not m:
                raise PatchDoesNotApply(label, f"line {i + 1} is not a hunk header: {lines[i].rstrip()!r}")
            n_old = int(m.group(2)) if m.group(2) is not None else 1
            n_new = int(m.group(4)) if m.group(4) is not None else 1
            hunk = _Hunk(int(m.group(1)), [], [])
            i += 1
            last: list[list[str]] = []
            while i < len(lines) and (len(hunk.old) < n_old or len(hunk.new) < n_new or lines[i].startswith("\\")):
                body = lines[i]
                tag, rest = (body[0], body[1:]) if body not in ("\n", "\r\n") else (" ", body)  # an emptied context line
                if tag == "\\":   # "\ No newline at end of file": the line before it has no newline
                    for block in last:
                        block[-1] = block[-1].rstrip("\n")
                elif tag == " ":
                    hunk.old.append(rest)
                    hunk.new.append(rest)
                    last = [hunk.old, hunk.new]
                elif tag == "-":
                    hunk.old.append(rest)
                    last = [hunk.old]
                elif tag == "+":
                    hunk.new.append(rest)
                    last = [hunk.new]
                else:
                    raise PatchDoesNotApply(label, f"line {i + 1}: a hunk ended early ({body.rstrip()!r})")
                i += 1
            if len(hunk.old) != n_old or len(hunk.new) != n_new:
                raise PatchDoesNotApply(label, f"the hunk at line {hunk.old_start} of {fp.new_path or fp.old_path} "
                                        "is cut short (the file ends inside it)")
            fp.hunks.append(hunk)
        files.append(fp)
    if not files:
        raise PatchDoesNotApply(label, "holds no file diff (no ---/+++ lines)")
    return files


def _path(field: str, label: str) -> str | None:
    name = field.split("\t")[0].strip()
    if name == "/dev/null":
        return None
    parts = PurePosixPath(name).parts[1:]  # -p1: drop a/ or b/
    if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
        raise PatchDoesNotApply(label, f"bad path {name!r} (want a/<path inside the chart>)")
    return "/".join(parts)


def apply_unified_diff(text: str, root: Path, label: str = "<patch>") -> list[str]:
    """Apply a ``-p1`` unified diff under ``root``; the paths it changed. Nothing is written
    unless every hunk of every file applies."""
    root = Path(root)
    out: dict[str, str | None] = {}
    for fp in parse_unified_diff(text, label):
        rel = fp.old_path or fp.new_path
        assert rel is not None
        target = root / rel
        if fp.old_path is None:
            if target.exists():
                raise PatchDoesNotApply(label, f"creates {rel}, which the reference chart already has")
            old: list[str] = []
        elif not target.is_file():
            raise PatchDoesNotApply(label, f"changes {rel}, which the reference chart no longer has")
        else:
            old = (out.get(rel) if rel in out else target.read_text()).splitlines(keepends=True)
        new: list[str] = []
        pos = 0    # where the previous hunk ended in ``old``
        shift = 0  # how far the hunks found so far sat from the lines they name
        for n, h in enumerate(fp.hunks, 1):
            at = _find(old, h.old, pos, max(h.old_start - 1, 0) + shift)
            if at is None:
                first = next((x for x in h.old if x.strip()), h.old[0] if h.old else "")
                raise PatchDoesNotApply(label, f"hunk {n} of {rel} (at line {h.old_start}) no longer matches the "
                                        f"reference chart: its {len(h.old)} old lines (from {first.strip()!r}) are "
                                        "not there")
            shift = at - max(h.old_start - 1, 0)
            new += old[pos:at] + h.new
            pos = at + len(h.old)
        new += old[pos:]
        out[fp.new_path or rel] = None if fp.new_path is None else "".join(new)
        if fp.new_path is not None and fp.new_path != rel:
            out[rel] = None  # a rename
    for rel, content in out.items():
        if content is None:
            (root / rel).unlink(missing_ok=True)
        else:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(content)
    return sorted(out)


def _find(lines: list[str], block: list[str], lo: int, want: int) -> int | None:
    """The start in ``lines[lo:]`` of ``block`` nearest to ``want`` (exact lines, no fuzz)."""
    starts = [s for s in range(lo, len(lines) - len(block) + 1) if lines[s:s + len(block)] == block]
    return min(starts, key=lambda s: (abs(s - want), s)) if starts else None
