"""Rewrite the file lists in MRISuperRes/CMakeLists.txt from what is on disk.

Slicer installs only the files a module's CMakeLists.txt lists; a Lib file missing there is missing from the
installed extension. Run this after adding or removing engine files; tests/test_extension_layout.py fails when
the lists are out of date.

Usage: python scripts/sync_module_cmake.py [--check]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "MRISuperRes"
CMAKE = MODULE / "CMakeLists.txt"
LIBRARY = MODULE / "MRISuperResLib"
RESOURCE_PATTERNS = ("weights/*.safetensors", "weights/*.md", "weights/*.json")


def scripts() -> list[str]:
    files = sorted(p.relative_to(LIBRARY).as_posix() for p in LIBRARY.rglob("*.py") if "__pycache__" not in p.parts)
    return ["${MODULE_NAME}.py"] + [f"${{MODULE_NAME}}Lib/{f}" for f in files]


def resources() -> list[str]:
    fixed = ["Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui", "Resources/requirements.txt"]
    data = sorted(p.relative_to(LIBRARY).as_posix() for pattern in RESOURCE_PATTERNS for p in LIBRARY.glob(pattern))
    return fixed + [f"${{MODULE_NAME}}Lib/{f}" for f in data]


def render(text: str) -> str:
    for variable, items in (("MODULE_PYTHON_SCRIPTS", scripts()), ("MODULE_PYTHON_RESOURCES", resources())):
        block = f"set({variable}\n" + "".join(f"  {item}\n" for item in items) + "  )"
        text, count = re.subn(rf"set\({variable}\n.*?\n  \)", lambda _m: block, text, flags=re.S)
        if count != 1:
            raise SystemExit(f"cannot find the set({variable} ...) block in {CMAKE}")
    return text


def main() -> int:
    current = CMAKE.read_text()
    wanted = render(current)
    if "--check" in sys.argv:
        if current != wanted:
            print(f"{CMAKE} file lists are out of date; run python scripts/sync_module_cmake.py", file=sys.stderr)
            return 1
        return 0
    CMAKE.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
