"""The Slicer extension's layout: CMake lists every file, the engine never imports slicer."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "MRISuperRes" / "MRISuperResLib"


def test_module_cmake_lists_every_engine_file() -> None:
    completed = subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_module_cmake.py"), "--check"],
                               capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


def test_every_file_named_in_cmake_exists() -> None:
    for module in ("MRISuperRes", "MRISuperResTraining"):
        text = (ROOT / module / "CMakeLists.txt").read_text()
        names = re.findall(r"^\s+(\$\{MODULE_NAME\}\S*|Resources/\S+)$", text, flags=re.M)
        assert names, f"no files listed in {module}/CMakeLists.txt"
        for name in names:
            path = ROOT / module / name.replace("${MODULE_NAME}", module)
            assert path.is_file(), f"{module}/CMakeLists.txt lists missing {name}"


def test_extension_cmake_has_required_fields() -> None:
    text = (ROOT / "CMakeLists.txt").read_text()
    for field in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                  "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf'set\({field} "[^"]+"\)', text), field
    assert re.search(r'set\(EXTENSION_DEPENDS "?PyTorch"?\)', text)
    assert "add_subdirectory(MRISuperRes)" in text and "add_subdirectory(MRISuperResTraining)" in text
    for module in ("MRISuperRes", "MRISuperResTraining"):
        assert "WITH_GENERIC_TESTS" in (ROOT / module / "CMakeLists.txt").read_text()


def test_icon_and_screenshot_urls_point_at_files_in_this_repository() -> None:
    text = (ROOT / "CMakeLists.txt").read_text()
    urls = re.findall(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/main/(\S+?)[\s\"]", text)
    assert any(u.endswith("MRISuperRes.png") for u in urls) and len(urls) >= 2
    for relative in urls:
        assert (ROOT / relative).is_file(), relative
    from PIL import Image

    with Image.open(ROOT / "Resources" / "Icons" / "MRISuperRes.png") as icon:
        assert icon.size == (128, 128)


#: The package's layers, lowest first. A folder may import its own layer and the layers listed before it; the
#: top-level ``errors`` and ``version`` modules are shared by all. ``cli`` and ``slicer`` are two front ends side by
#: side: neither imports the other. ``gui`` holds the Qt parts of the two module widgets (the only folder that
#: imports Qt; only the module files import it).
LAYERS = ("imaging", "processing", "models", "engine", "evaluation", "training", "cohort", "cli", "slicer", "gui")
SHARED = {"errors", "version"}
FRONT_ENDS = {"cli", "slicer", "gui"}
#: Modules outside the folders: the package's lazy public API and the two documented Slicer paths (re-exports).
TOP_LEVEL_MODULES = {"__init__.py", "errors.py", "version.py", "slicer_logic.py", "slicer_training.py"}


def _imported_modules(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved against its package)."""
    package = list(path.relative_to(LIBRARY.parent).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                names.append(".".join([*base, node.module]))
            else:
                names += [".".join([*base, alias.name]) for alias in node.names]
    return names


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "MRISuperResLib" or len(parts) < 2:
        return None
    return None if parts[1] in SHARED else parts[1]


def test_the_package_is_layers_as_folders() -> None:
    assert {p.name for p in LIBRARY.glob("*.py")} == TOP_LEVEL_MODULES
    folders = {p.name for p in LIBRARY.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(LAYERS)


def test_each_layer_imports_only_the_layers_below_it() -> None:
    for path in LIBRARY.rglob("*.py"):
        own = path.relative_to(LIBRARY).parts[0]
        if own not in LAYERS:
            continue
        allowed = set(LAYERS[: LAYERS.index(own) + 1]) - (FRONT_ENDS - {own})
        if own == "gui":
            allowed.add("slicer")  # the widgets drive the MRML logic
        for module in _imported_modules(path):
            layer = _layer(module)
            assert layer is None or layer in allowed, f"{path.relative_to(ROOT)} imports {module}"


def test_only_the_slicer_folders_import_slicer_and_only_gui_imports_qt() -> None:
    # The bridge is MRML logic: slicer and vtk, never Qt, so slicer-core tests it for real; Qt lives in gui/ and
    # the two module files.
    for path in LIBRARY.rglob("*.py"):
        folder = path.relative_to(LIBRARY).parts[0]
        for module in _imported_modules(path):
            root = module.split(".")[0]
            if root in {"qt", "ctk", "slicer.qSlicerWidget"}:
                assert folder == "gui", f"{path.relative_to(ROOT)} imports {module}"
            if root in {"slicer", "vtk"}:
                assert folder in {"slicer", "gui"}, f"{path.relative_to(ROOT)} imports {module}"


def test_nothing_in_the_package_imports_the_gui_folder() -> None:
    for path in LIBRARY.rglob("*.py"):
        if path.relative_to(LIBRARY).parts[0] != "gui":
            assert not [m for m in _imported_modules(path) if _layer(m) == "gui"], path


def test_importing_the_engine_is_light() -> None:
    code = "import sys, MRISuperResLib; print(MRISuperResLib.__version__, 'torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               cwd=ROOT / "MRISuperRes")
    version, torch_loaded = completed.stdout.split()
    assert version.count(".") == 2
    assert torch_loaded == "False"


#: Keys of Slicer's catalog entry schema v1.0.1 (``Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json``).
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}
CATALOG_KEYS = CATALOG_REQUIRED | {"scm_revision", "scm_type", "build_dependencies", "build_subdirectory", "enabled",
                                   "tier"}


def _cmake_value(text: str, name: str) -> str:
    match = re.search(rf'set\({name} "?([^")]*)"?\)', text)
    assert match, name
    return match.group(1).strip()


def test_the_catalog_entry_agrees_with_the_extension_cmake() -> None:
    import json

    cmake = (ROOT / "CMakeLists.txt").read_text()
    project = re.search(r"^project\((\w+)\)", cmake, flags=re.M).group(1)
    entries = list((ROOT / "catalog").glob("*.json"))
    assert [p.name for p in entries] == [f"{project}.json"]  # the ExtensionsIndex file is named after project()
    entry = json.loads(entries[0].read_text())
    assert CATALOG_REQUIRED <= set(entry) <= CATALOG_KEYS, set(entry) ^ CATALOG_KEYS
    assert entry["$schema"].endswith("/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert entry["scm_url"] == _cmake_value(cmake, "EXTENSION_HOMEPAGE")
    assert entry["category"] == _cmake_value(cmake, "EXTENSION_CATEGORY")
    assert entry["build_dependencies"] == _cmake_value(cmake, "EXTENSION_DEPENDS").split()
    assert entry.get("build_subdirectory", ".") == "." and 1 <= entry.get("tier", 1) <= 5
    # Icon and screenshots are served from the catalog's repository and revision, and exist here.
    owner_repo = entry["scm_url"].removeprefix("https://github.com/")
    raw = f"https://raw.githubusercontent.com/{owner_repo}/{entry.get('scm_revision', 'main')}/"
    urls = [_cmake_value(cmake, "EXTENSION_ICONURL"), *_cmake_value(cmake, "EXTENSION_SCREENSHOTURLS").split()]
    for url in urls:
        assert url.startswith(raw), url
        assert (ROOT / url.removeprefix(raw)).is_file(), url
    assert project.lower() in owner_repo.lower() and not project.startswith("Slicer")


def test_the_license_file_is_the_apache_2_text_the_project_declares() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()
