"""The Python packages the Slicer modules need, and how they get installed without breaking Slicer's own.

What the modules need:

* **PyTorch** (:data:`TORCH_REQUIREMENT`), installed by the PyTorch extension (``PyTorchUtils``, light-the-torch:
  the CUDA build that matches the NVIDIA driver) and never by pip here;
* the packages of ``Resources/requirements.txt`` (MONAI, safetensors, nibabel ...), with their version specifiers
  honoured: an older MONAI installed by another extension counts as missing and is upgraded.

How they are installed (:func:`install_command`):

* Slicer 5.12+: ``slicer.packaging.pip_ensure(load_requirements(path), constraints=...)`` (``slicer.packaging`` is
  a submodule that must be imported explicitly);
* Slicer 5.10: ``slicer.util.pip_install([...])`` with an argument list, so paths with spaces (``Slicer 5.10.0``
  on Windows) or backslashes reach pip intact.

Either way pip gets a constraints file (:func:`pin_constraints`) pinning the installed ``torch``, ``numpy`` and
``SimpleITK`` to their exact versions: pip picks package versions that work with them (an older MONAI when the
newest needs a newer torch) instead of replacing the PyTorch extension's CUDA torch with a CPU build from PyPI.
A package that was already imported and changed version needs a restart (:func:`changed_loaded_packages`).

:func:`ensure_dependencies` is the whole installation as both Slicer modules run it (ask once, PyTorch through the
PyTorch extension, then pip, then offer a restart); the module file hands in its dialogs (:class:`InstallDialogs`).
Nothing here imports torch or shows a dialog itself.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PINNED_PACKAGES",
    "REQUIREMENTS_FILE",
    "TORCH_REQUIREMENT",
    "DependencyPlan",
    "InstallDialogs",
    "changed_loaded_packages",
    "dependency_plan",
    "ensure_dependencies",
    "install_command",
    "install_requirements",
    "installed_versions",
    "pin_constraints",
    "read_requirements",
    "slicer_install_dialogs",
    "unmet_requirements",
    "write_constraints",
]

#: The torch the engine needs (``pyproject.toml``), passed to the PyTorch extension's ``installTorch``.
TORCH_REQUIREMENT = ">=2.2"

#: The engine's requirements, shipped in the MRISuperRes module's ``Resources`` (beside ``MRISuperResLib``).
REQUIREMENTS_FILE = Path(__file__).resolve().parents[2] / "Resources" / "requirements.txt"

#: Packages that pip must never replace: the PyTorch extension's torch and the numpy / SimpleITK Slicer ships.
PINNED_PACKAGES = ("torch", "numpy", "SimpleITK")

#: ``name -> installed version`` (``None`` when not installed).
VersionLookup = Callable[[str], "str | None"]


def _requirement_class():
    # ``packaging`` ships with Slicer 5.12; pip always carries its own copy (Slicer 5.10).
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - depends on the Python distribution
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    return Requirement


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (``None`` when not installed)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def read_requirements(path: str | os.PathLike) -> list[str]:
    """The requirement lines of a ``requirements.txt`` (comments, blank lines and pip options dropped).

    Raises:
        ValueError: a line is not a valid requirement (names the line).
    """
    Requirement = _requirement_class()
    requirements = []
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split(" #")[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line or line.startswith("-"):
            continue
        try:
            requirements.append(str(Requirement(line)))
        except Exception as error:  # InvalidRequirement of either packaging copy
            raise ValueError(f"{path}, line {number}: {line!r} is not a valid requirement ({error})") from None
    return requirements


def unmet_requirements(requirements: Iterable[str],
                       version_of: VersionLookup = installed_version) -> list[tuple[str, str | None]]:
    """The requirements that the installed packages do not satisfy, each with the installed version (``None``:
    not installed). Version specifiers are honoured (``monai>=1.4`` is unmet by monai 1.3.2); a requirement whose
    environment marker does not apply here is met."""
    Requirement = _requirement_class()
    unmet = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = version_of(requirement.name)
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            unmet.append((str(requirement), version))
    return unmet


def pin_constraints(packages: Iterable[str] = PINNED_PACKAGES,
                    version_of: VersionLookup = installed_version) -> list[str]:
    """``name==version`` for each installed package of ``packages`` (pip constraints: never replace them)."""
    return [f"{name}=={version}" for name in packages if (version := version_of(name)) is not None]


def write_constraints(folder: str | os.PathLike, constraints: Iterable[str]) -> Path:
    """Write a pip constraints file into ``folder`` (created if needed); returns its path."""
    path = Path(folder) / "MRISuperRes-constraints.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Installed packages pip must keep (written by the MRISuperRes module)\n"
                    + "".join(f"{line}\n" for line in constraints), encoding="utf-8")
    return path


@dataclass
class DependencyPlan:
    """What is missing, and what installing it means.

    Attributes:
        torch_version: the installed torch version (``None``: not installed).
        torch_ok: the installed torch satisfies :data:`TORCH_REQUIREMENT`.
        unmet: unmet requirements of ``requirements.txt`` as ``(requirement, installed version or None)``.
    """

    torch_version: str | None
    torch_ok: bool
    unmet: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def satisfied(self) -> bool:
        return self.torch_ok and not self.unmet

    @property
    def install_torch(self) -> bool:
        """Torch is absent: the PyTorch extension installs it (a torch that is too old is never replaced here)."""
        return self.torch_version is None

    def packages(self) -> list[str]:
        """The unmet requirements, as pip arguments."""
        return [requirement for requirement, _version in self.unmet]

    def describe(self) -> str:
        """Lines for the confirmation dialog: what will be installed or upgraded."""
        lines = []
        if self.install_torch:
            lines.append(f"- PyTorch (torch{TORCH_REQUIREMENT}), through the PyTorch extension (the build that "
                         "matches your GPU driver)")
        for requirement, version in self.unmet:
            lines.append(f"- {requirement}" + (f" (upgrading {version})" if version else ""))
        return "\n".join(lines)


def dependency_plan(requirements_file: str | os.PathLike, version_of: VersionLookup = installed_version) -> DependencyPlan:
    """What the modules still need, from the installed package metadata only (nothing is imported)."""
    torch_version = version_of("torch")
    torch_ok = torch_version is not None and not unmet_requirements([f"torch{TORCH_REQUIREMENT}"], version_of)
    return DependencyPlan(torch_version, torch_ok, unmet_requirements(read_requirements(requirements_file), version_of))


def install_command(packages: list[str], constraints_file: str | os.PathLike) -> list[str]:
    """The ``slicer.util.pip_install`` argument list (Slicer 5.10): each argument one list item, so that paths
    with spaces or backslashes are not split."""
    return [*packages, "-c", os.fspath(constraints_file)]


def installed_versions() -> dict[str, str]:
    """``{normalised distribution name: version}`` of every installed distribution (the first on ``sys.path``
    where several are, as ``import`` finds it)."""
    versions: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata.get("Name")
        if name:
            versions.setdefault(_normalise(name), distribution.version)
    return versions


def changed_loaded_packages(before: Mapping[str, str], after: Mapping[str, str],
                            modules: Iterable[str] | None = None,
                            top_level: Mapping[str, list[str]] | None = None) -> list[tuple[str, str | None, str]]:
    """Distributions whose version changed (or that were installed) while one of their modules was already
    imported: Slicer must restart to use them. Returns ``(name, old version or None, new version)``.

    Args:
        before, after: :func:`installed_versions` before and after installing.
        modules: imported module names (default ``sys.modules``).
        top_level: import name -> distribution names (default ``importlib.metadata.packages_distributions()``).
    """
    loaded = {name.split(".")[0] for name in (sys.modules if modules is None else modules)}
    if top_level is None:
        top_level = importlib.metadata.packages_distributions()
    imports: dict[str, set[str]] = {}
    for import_name, distributions in top_level.items():
        for distribution in distributions:
            imports.setdefault(_normalise(distribution), set()).add(import_name)
    changed = []
    for name, new in after.items():
        old = before.get(name)
        if old != new and imports.get(name, set()) & loaded:
            changed.append((name, old, new))
    return changed


@dataclass(frozen=True)
class InstallDialogs:
    """The dialogs of an installation, shown by the module file (Qt lives there).

    Attributes:
        error: shows an error message.
        confirm: asks OK / Cancel with a window title; ``True`` to go on.
        confirm_restart: asks Yes / No to restart Slicer now, with a window title; ``True`` to restart.
        restart: restarts Slicer.
        tr: translates a message (the module's ``_``).
    """

    error: Callable[[str], None]
    confirm: Callable[[str, str], bool]
    confirm_restart: Callable[[str, str], bool]
    restart: Callable[[], None]
    tr: Callable[[str], str] = str


def slicer_install_dialogs(tr: Callable[[str], str] = str) -> InstallDialogs:
    """The dialogs of an installation inside Slicer: ``slicer.util``'s message boxes and restart; ``tr`` is the
    module's translation function."""
    import slicer.util

    return InstallDialogs(
        error=lambda text: slicer.util.errorDisplay(text),
        confirm=lambda text, title: slicer.util.confirmOkCancelDisplay(text, windowTitle=title),
        confirm_restart=lambda text, title: slicer.util.confirmYesNoDisplay(text, windowTitle=title),
        restart=lambda: slicer.util.restart(), tr=tr)


def ensure_dependencies(dialogs: InstallDialogs, requirements_file: str | os.PathLike = REQUIREMENTS_FILE,
                        ask: bool = True, retry: str = "click Enhance again",
                        title: str = "MRI Super-Resolution") -> bool:
    """Install what is missing: PyTorch through the PyTorch extension, then the packages of ``requirements_file``
    (version specifiers honoured), asking the user once (unless ``ask`` is false).

    The installed torch, numpy and SimpleITK are pinned while pip runs, so the PyTorch extension's build is never
    replaced. When a package that was already imported changed, offers to restart Slicer. Never runs at import
    time.

    Args:
        dialogs: the module's dialogs.
        retry: what the user does once the problem is solved (ends the messages: ``"click Enhance again"``).
        title: the dialogs' window title.

    Returns:
        ``True`` when everything is installed; ``False`` when the user declines or installing fails (with a
        message saying what to do).
    """
    tr = dialogs.tr
    plan = dependency_plan(requirements_file)
    if plan.satisfied:
        return True
    if not plan.install_torch and not plan.torch_ok:
        dialogs.error(tr(
            "PyTorch {version} is installed, MRI Super-Resolution needs torch{requirement}. In the PyTorch Utils "
            "module, uninstall PyTorch, restart Slicer and {retry}: a suitable build is then installed.").format(
            version=plan.torch_version, requirement=TORCH_REQUIREMENT, retry=retry))
        return False
    if plan.install_torch:
        try:
            import PyTorchUtils
        except ImportError:
            dialogs.error(tr("This module needs PyTorch: install the PyTorch extension from the Extensions Manager, "
                             "restart Slicer, then {retry}.").format(retry=retry))
            return False
    if ask and not dialogs.confirm(
            tr("MRI Super-Resolution needs these Python packages:") + "\n" + plan.describe() + "\n\n"
            + tr("Install them now? This needs internet access and takes a few minutes; the installed PyTorch, "
                 "numpy and SimpleITK are kept."), title):
        return False
    before = installed_versions()
    try:
        if plan.install_torch:
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                                 torchVersionRequirement=TORCH_REQUIREMENT)
            if torch is None:
                dialogs.error(tr("PyTorch was not installed. Without internet access, install it from the PyTorch "
                                 "Utils module by hand, then {retry}.").format(retry=retry))
                return False
        install_requirements(requirements_file)
    except Exception as error:
        dialogs.error(tr("Installing the packages failed ({error}). Check the internet connection and try again, or "
                         "install them from the Python console with slicer.util.pip_install.").format(error=error))
        return False
    still = dependency_plan(requirements_file)
    if not still.satisfied:
        dialogs.error(tr("These packages are still missing after installing:") + "\n" + still.describe())
        return False
    changed = changed_loaded_packages(before, installed_versions())
    if changed and dialogs.confirm_restart(
            tr("These packages were already loaded and changed version; Slicer must restart to use them:") + "\n"
            + "\n".join(f"- {name} {old or '-'} -> {new}" for name, old, new in changed) + "\n\n"
            + tr("Restart now?"), title):
        dialogs.restart()
    return True


def install_requirements(requirements_file: str | os.PathLike = REQUIREMENTS_FILE) -> None:
    """Install the unmet requirements of the file, with the installed torch, numpy and SimpleITK pinned.

    Slicer 5.12+: ``slicer.packaging.pip_ensure(load_requirements(file), constraints=...)``; before:
    ``slicer.util.pip_install`` with an argument list (paths with spaces stay whole). Asks nothing: the caller
    asked. Raises what pip raises (``subprocess.CalledProcessError``).
    """
    import tempfile

    import slicer

    unmet = [requirement for requirement, _version in unmet_requirements(read_requirements(requirements_file))]
    if not unmet:
        return
    folder = getattr(getattr(slicer, "app", None), "temporaryPath", None) or tempfile.gettempdir()
    constraints = write_constraints(folder, pin_constraints())
    packaging = slicer_packaging()
    if packaging is not None:
        packaging.pip_ensure(packaging.load_requirements(os.fspath(requirements_file)), constraints=constraints,
                             prompt_install=False, prompt_restart=False, requester="MRI Super-Resolution")
    else:
        slicer.util.pip_install(install_command(unmet, constraints))


def slicer_packaging():  # type: ignore[no-untyped-def]
    """``slicer.packaging`` (Slicer 5.12+; a submodule that must be imported), else ``None``."""
    try:
        import slicer.packaging
    except ImportError:
        return None
    return slicer.packaging if hasattr(slicer.packaging, "pip_ensure") else None


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
