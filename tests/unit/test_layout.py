"""The package's layout rules that a reader relies on (issue 11): every import of meshcert's own
code sits at the top of its module, never inside a function (an import hidden in a function is how
an import circle hides; `farm-studio look` draws the circles themselves). Engine-free: reads source."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# files that run on their own inside containers (stdlib only, one file each): not package modules
STANDALONE = {"meshcert/world/nodeagent.py", "meshcert/sut/reference/runtime.py"}


def imports_inside_functions(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for n in ast.walk(fn):
                if isinstance(n, (ast.Import, ast.ImportFrom)):
                    names = n.module if isinstance(n, ast.ImportFrom) else ", ".join(a.name for a in n.names)
                    found.append(f"{path.relative_to(root)}:{n.lineno} {fn.name}(): import {names}")
    return found


def test_no_import_inside_a_function_in_the_package():
    found = [x for p in sorted((ROOT / "meshcert").rglob("*.py"))
             if str(p.relative_to(ROOT)) not in STANDALONE for x in imports_inside_functions(p)]
    assert not found, "imports inside functions (move them to the top of the module):\n" + "\n".join(found)


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    f = tmp_path / "probe.py"
    f.write_text("import os\n\ndef f():\n    import json\n    return json\n")
    assert imports_inside_functions(f, tmp_path) == ["probe.py:4 f(): import json"]
