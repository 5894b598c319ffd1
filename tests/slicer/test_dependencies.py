"""Which packages the Slicer modules install and how (:mod:`MRISuperResLib.slicer.dependencies`).

Installed versions come from real package metadata (``*.dist-info`` folders put first on ``sys.path``), as
``importlib.metadata`` finds them inside Slicer.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from MRISuperResLib.slicer import dependencies as deps

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "MRISuperRes" / "Resources" / "requirements.txt"


@pytest.fixture()
def site(tmp_path, monkeypatch):
    """A site folder first on ``sys.path``; ``site(name, version)`` installs a distribution's metadata there."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))

    def install(name: str, version: str) -> Path:
        info = folder / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "top_level.txt").write_text(f"{name}\n")
        return info

    return install


def test_the_shipped_requirements_parse_with_their_specifiers() -> None:
    requirements = deps.read_requirements(REQUIREMENTS)
    assert "monai>=1.4" in requirements
    assert all(not r.startswith(("#", "-")) for r in requirements)
    assert not any(r.split(">")[0].split("=")[0].lower() in ("torch", "numpy", "simpleitk") for r in requirements)


def test_a_bad_requirement_line_is_named(tmp_path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\n-c constraints.txt\nmonai>=1.4  # the engine's networks\nnot a requirement!\n")
    with pytest.raises(ValueError, match="line 4"):
        deps.read_requirements(path)


def test_an_older_monai_is_unmet_and_a_new_enough_one_is_met(site) -> None:
    site("monai", "1.3.2")
    assert deps.unmet_requirements(["monai>=1.4"]) == [("monai>=1.4", "1.3.2")]
    assert deps.unmet_requirements(["monai>=1.3"]) == []
    assert deps.unmet_requirements(["surely-not-installed-pkg>=1"]) == [("surely-not-installed-pkg>=1", None)]
    # A requirement whose marker does not apply here is met.
    assert deps.unmet_requirements(['surely-not-installed-pkg; python_version < "3"']) == []


def test_the_plan_lists_upgrades_and_keeps_a_too_old_torch(site) -> None:
    site("monai", "1.3.2")
    site("torch", "2.1.0+cu118")
    plan = deps.dependency_plan(REQUIREMENTS)
    assert ("monai>=1.4", "1.3.2") in plan.unmet
    assert not plan.torch_ok and not plan.install_torch  # never replaced here: the user is told what to do
    assert "- monai>=1.4 (upgrading 1.3.2)" in plan.describe()
    assert not plan.satisfied


def test_the_installed_torch_numpy_and_simpleitk_are_pinned(site) -> None:
    site("torch", "2.4.1+cu121")
    pins = deps.pin_constraints()
    assert "torch==2.4.1+cu121" in pins
    assert any(p.startswith("numpy==") for p in pins)
    assert all(p.split("==")[0] in deps.PINNED_PACKAGES for p in pins)
    from packaging.requirements import Requirement

    # pip reads the pin as an exact version that the installed local CUDA build satisfies.
    assert Requirement("torch==2.4.1+cu121").specifier.contains("2.4.1+cu121")


def test_paths_with_spaces_and_backslashes_stay_one_argument(tmp_path) -> None:
    folder = tmp_path / "Slicer 5.10.0" / "slicer.org"
    constraints = deps.write_constraints(folder, ["torch==2.4.1", "numpy==2.0.2"])
    assert constraints.read_text().splitlines()[1:] == ["torch==2.4.1", "numpy==2.0.2"]
    windows = r"C:/Users/u/AppData/Local/slicer.org/Slicer 5.10.0/tmp\MRISuperRes-constraints.txt"
    assert deps.install_command(["monai>=1.4", "nibabel>=5.0"], windows) == ["monai>=1.4", "nibabel>=5.0", "-c",
                                                                             windows]


def test_a_loaded_package_that_changed_needs_a_restart(site, monkeypatch) -> None:
    old = site("fakepkgmrisr", "1.0")
    before = deps.installed_versions()
    assert before["fakepkgmrisr"] == "1.0"
    monkeypatch.setitem(sys.modules, "fakepkgmrisr", types.ModuleType("fakepkgmrisr"))
    (old / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkgmrisr\nVersion: 2.0\n")
    after = deps.installed_versions()
    changed = deps.changed_loaded_packages(before, after, top_level={"fakepkgmrisr": ["fakepkgmrisr"]})
    assert changed == [("fakepkgmrisr", "1.0", "2.0")]
    # Not imported: no restart needed.
    assert deps.changed_loaded_packages(before, after, modules=["os"], top_level={"fakepkgmrisr": ["fakepkgmrisr"]}) == []


def test_the_first_distribution_on_the_path_wins(site) -> None:
    site("monai", "1.3.2")  # shadows the venv's newer MONAI, as import would
    assert deps.installed_versions()["monai"] == "1.3.2"


def _dialogs(shown: list[str], confirm: bool = True) -> deps.InstallDialogs:
    """Dialogs that record what they show, and answer ``confirm``."""
    return deps.InstallDialogs(error=shown.append, confirm=lambda text, title: shown.append(text) or confirm,
                               confirm_restart=lambda text, title: shown.append(text) or False,
                               restart=lambda: shown.append("restart"))


def test_the_requirements_file_is_the_shipped_one() -> None:
    assert deps.REQUIREMENTS_FILE == REQUIREMENTS and deps.REQUIREMENTS_FILE.is_file()


def test_the_installer_asks_nothing_when_everything_is_installed(site, tmp_path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("monai>=1.3\n")
    site("monai", "1.3.2")
    site("torch", "2.4.1")
    shown: list[str] = []
    assert deps.ensure_dependencies(_dialogs(shown), requirements) and shown == []


def test_the_installer_refuses_a_too_old_torch_and_says_what_to_do(site, tmp_path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("monai>=1.3\n")
    site("monai", "1.3.2")
    site("torch", "2.1.0")
    shown: list[str] = []
    assert not deps.ensure_dependencies(_dialogs(shown), requirements, retry="click Start again")
    assert len(shown) == 1 and "PyTorch 2.1.0 is installed" in shown[0] and "click Start again" in shown[0]


def test_declining_the_installation_installs_nothing(site, tmp_path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("surely-not-installed-pkg>=1\n")
    site("torch", "2.4.1")
    shown: list[str] = []
    assert not deps.ensure_dependencies(_dialogs(shown, confirm=False), requirements)
    assert len(shown) == 1 and "- surely-not-installed-pkg>=1" in shown[0]
