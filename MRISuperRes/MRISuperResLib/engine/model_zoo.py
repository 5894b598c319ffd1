"""Models shipped with the engine (in ``MRISuperResLib/weights/``), the user's own models, and choosing one by
name, path or scale.

User models are the ``.safetensors`` model files directly inside *user model folders* (not their subfolders):

* the folders listed in the environment variable :data:`MODEL_PATH_VARIABLE` (``MRISUPERRES_MODEL_PATH``,
  separated by ``os.pathsep``: ``:`` on Linux and macOS, ``;`` on Windows), then
* the folders registered with :func:`register_model_folder` (the Slicer training module registers its output
  folder), kept in ``model_folders.json`` in :func:`user_config_dir`.

The shipped models are those listed in the manifest ``weights/models.json`` (:mod:`.model_manifest`), which also
says which model is the default for each kind of scale. A model is known by the ``name`` in its metadata. Shipped
names come first: a user model with the name of a shipped model, or of a user model found earlier, is left out of
:func:`list_models` and loads by path only. ``"default"`` only ever picks a shipped model.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelError, OutputError
from ..imaging.geometry import Scale, format_scale, format_voxel_range, parse_scale
from .model_header import MODEL_EXTENSION, read_metadata
from .model_manifest import ARBITRARY, MANIFEST_NAME, read_manifest, scale_kind
from .model_metadata import ModelMetadata

if TYPE_CHECKING:  # the network side needs torch; listing and resolving models must not import it
    from .checkpoint import LoadedModel

log = logging.getLogger(__name__)

WEIGHTS_FOLDER = Path(__file__).resolve().parents[1] / "weights"

#: The name that asks for the shipped model suited to the requested scale.
DEFAULT_MODEL = "default"

#: Environment variable listing extra folders of user models (``os.pathsep``-separated).
MODEL_PATH_VARIABLE = "MRISUPERRES_MODEL_PATH"

#: Environment variable overriding the folder of the engine's user settings (:func:`user_config_dir`).
CONFIG_DIR_VARIABLE = "MRISUPERRES_CONFIG_DIR"

#: File in :func:`user_config_dir` holding the registered model folders (a JSON list of absolute paths).
MODEL_FOLDERS_FILE = "model_folders.json"

#: Extension of a model's card: a Markdown file beside the model file, same stem.
CARD_EXTENSION = ".md"

SHIPPED, USER = "shipped", "user"


@dataclass(frozen=True)
class ModelEntry:
    """A model file and its metadata, without the network.

    Attributes:
        name: the model's name (its metadata ``name``, else the file stem).
        path: the model file.
        metadata: the file's metadata (see :mod:`.checkpoint`).
        source: ``"shipped"`` (in :data:`WEIGHTS_FOLDER`) or ``"user"`` (in a user model folder).
        default_for: for a shipped model, the kinds of scale the manifest makes it the default for.
        sha256: for a shipped model, the manifest's SHA-256 of the file (checked when it loads).
        card_name: for a shipped model, the manifest's card file name.
    """

    name: str
    path: Path
    metadata: ModelMetadata
    source: str = SHIPPED
    default_for: tuple[str, ...] = ()
    sha256: str | None = None
    card_name: str | None = None

    @property
    def description(self) -> str:
        """The metadata's one-line description (the family name when it has none)."""
        return self.metadata.description or self.metadata.family or "model"

    @property
    def card_path(self) -> Path | None:
        """The model's Markdown card (the manifest's for a shipped model, else ``<stem>.md`` beside the file), or
        ``None`` when there is none."""
        path = self.path.with_name(self.card_name) if self.card_name else self.path.with_suffix(CARD_EXTENSION)
        return path if path.is_file() else None

    def card(self) -> str:
        """The model's card: its Markdown file when present, else one written from the metadata."""
        path = self.card_path
        if path is not None:
            try:
                return path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                pass
        return model_card_text(self.metadata, self.name)

    def supports(self, scale: Scale) -> bool:
        """True when the model runs at ``scale`` as given or with the input's axes permuted (:func:`axis_order`)."""
        return axis_order(self.metadata.scales, scale) is not None

    def scales_text(self) -> str:
        """The supported scales for listings (``"any"`` or e.g. ``"1,1,4"``)."""
        scales = self.metadata.scales
        return "any" if scales is None else " ".join(format_scale(s) for s in scales)


def _same_scale(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(abs(x - y) < 1e-6 for x, y in zip(a, b))


IDENTITY_ORDER = (0, 1, 2)


def axis_order(scales: Sequence[tuple[float, float, float]] | None, scale: Scale) -> tuple[int, int, int] | None:
    """The order in which to hand the input's axes ``(i, j, k)`` to a model so that it runs at one of its scales.

    Returns a permutation ``p`` with ``(scale[p[0]], scale[p[1]], scale[p[2]])`` among ``scales``: the network sees
    ``np.transpose(input, p)`` and its output is transposed back. The identity when ``scale`` is supported as
    given or ``scales`` is ``None`` (any scale); ``None`` when no permutation fits. So a model for ``1,1,4`` (thick
    slices along k) also restores ``4,1,1`` and ``1,4,1``: the thick axis is moved to k and back.
    """
    if scales is None:
        return IDENTITY_ORDER
    for order in itertools.permutations(IDENTITY_ORDER):  # the identity comes first
        permuted = tuple(scale[axis] for axis in order)
        if any(_same_scale(s, permuted) for s in scales):
            return order  # type: ignore[return-value]
    return None


def shipped_models() -> list[ModelEntry]:
    """The models listed in the weights folder's manifest (``models.json``), sorted by name; reads the manifest
    and each file's header only.

    Raises:
        ModelError: the manifest is missing or malformed, or a file it lists is missing or unreadable.
    """
    entries = []
    for item in read_manifest(WEIGHTS_FOLDER):
        path = WEIGHTS_FOLDER / item.file
        if not path.is_file():
            raise ModelError(f"shipped model file {path} (listed in {WEIGHTS_FOLDER / MANIFEST_NAME}) is missing; "
                             "reinstall the extension")
        metadata = _read_typed(path)
        _fill_voxel_range(metadata, item.voxel_mm)
        entries.append(ModelEntry(metadata.name or path.stem, path, metadata, SHIPPED, item.default_for,
                                  item.sha256, item.card))
    return sorted(entries, key=lambda entry: entry.name)


def _fill_voxel_range(metadata: ModelMetadata, voxel_mm: tuple[float, float] | None) -> None:
    """Give a file that does not record its training voxel range (``training.voxel_mm``) the manifest's."""
    if voxel_mm is not None and metadata.trained_voxel_mm is None:
        metadata.training = {**metadata.training, "voxel_mm": list(voxel_mm)}


def user_config_dir() -> Path:
    """Folder of the engine's user settings: ``$MRISUPERRES_CONFIG_DIR`` when set, else ``mrisuperres`` in the
    platform's configuration folder (``$XDG_CONFIG_HOME`` or ``~/.config`` on Linux, ``~/Library/Application
    Support`` on macOS, ``%APPDATA%`` on Windows). It may not exist yet."""
    override = os.environ.get(CONFIG_DIR_VARIABLE)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "mrisuperres"


def _folders_file() -> Path:
    return user_config_dir() / MODEL_FOLDERS_FILE


def registered_model_folders() -> list[Path]:
    """The folders registered with :func:`register_model_folder`, in registration order (existing or not)."""
    path = _folders_file()
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as error:
        log.warning("ignoring unreadable model folder list %s: %s", path, error)
        return []
    return [Path(value) for value in values if isinstance(value, str)] if isinstance(values, list) else []


def _write_registered(folders: list[Path]) -> None:
    path = _folders_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.partial")
        temporary.write_text(json.dumps([str(folder) for folder in folders], indent=1), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as error:
        raise OutputError(f"cannot save the list of model folders to {path}: {error.strerror or error}; "
                          f"set {CONFIG_DIR_VARIABLE} to a writable folder") from None


def register_model_folder(folder: str | os.PathLike) -> Path:
    """Remember ``folder`` (made absolute) as a user model folder for later sessions; returns it.

    Registering a folder twice keeps one entry. The folder need not exist yet.

    Raises:
        OutputError: the list cannot be saved.
    """
    folder = Path(folder).expanduser().resolve()
    folders = registered_model_folders()
    if folder not in folders:
        _write_registered([*folders, folder])
    return folder


def unregister_model_folder(folder: str | os.PathLike) -> bool:
    """Forget a registered folder (its files are left alone); ``True`` when it was registered."""
    folder = Path(folder).expanduser().resolve()
    folders = registered_model_folders()
    if folder not in folders:
        return False
    _write_registered([f for f in folders if f != folder])
    return True


def user_model_folders() -> list[Path]:
    """The existing user model folders, in search order: ``$MRISUPERRES_MODEL_PATH`` first, then the registered
    ones; each once."""
    variable = [Path(p).expanduser() for p in os.environ.get(MODEL_PATH_VARIABLE, "").split(os.pathsep) if p]
    folders: list[Path] = []
    for folder in [*variable, *registered_model_folders()]:
        folder = folder.resolve()
        if folder.is_dir() and folder not in folders:
            folders.append(folder)
    return folders


def user_models() -> list[ModelEntry]:
    """The models in the user model folders (folder order, then file name), one per name.

    A file that is not a readable MRISuperRes model (corrupted, pickled, half-copied) is skipped with a logged
    warning, so one bad file never hides the others; loading it by path reports the problem.
    """
    entries: list[ModelEntry] = []
    taken = {entry.name for entry in shipped_models()}
    for folder in user_model_folders():
        found = []
        for path in sorted(folder.glob(f"*{MODEL_EXTENSION}")):
            if path.name.startswith("."):
                continue
            try:
                metadata = ModelMetadata.from_header(read_metadata(path))
            except (ModelError, ValueError) as error:
                log.warning("skipping user model %s: %s", path, error)
                continue
            found.append((metadata.name or path.stem, path, metadata))
        # Within a folder, the file named after its model comes first: a training run's final NAME.safetensors
        # wins over its best.safetensors, which carries the same name.
        found.sort(key=lambda item: item[1].stem != item[0])
        for name, path, metadata in found:
            if name in taken:
                if path.name != "best.safetensors":
                    log.warning("skipping user model %s: the name %s is already taken; load it by path", path, name)
                continue
            taken.add(name)
            entries.append(ModelEntry(name, path, metadata, USER))
    return entries


def list_models() -> list[ModelEntry]:
    """Every model known by name: the shipped ones (sorted by name), then the user models (see
    :func:`user_models`). Each entry has the model's ``description``, ``scales`` and ``card()``."""
    return [*shipped_models(), *user_models()]


#: Validation PSNR gain over B-spline (dB) below which a trained model is called barely better.
BARELY_BETTER_DB = 0.3


def baseline_verdict(validation: dict[str, Any]) -> str | None:
    """One line saying that a model scored worse than, or barely better than, the B-spline baseline on its
    validation subjects (``validation``: metadata ``metrics.validation`` with ``psnr`` and ``baseline_psnr`` in
    dB); ``None`` when it is clearly better or the numbers are missing. The thresholds: any loss, and a gain
    under :data:`BARELY_BETTER_DB`."""
    try:
        gain = float(validation["psnr"]) - float(validation["baseline_psnr"])
    except (KeyError, TypeError, ValueError):
        return None
    if gain != gain:  # NaN
        return None
    if gain < 0:
        return (f"warning: {-gain:.2f} dB worse than B-spline on validation; B-spline interpolation is the better "
                "choice for data like the validation set")
    if gain < BARELY_BETTER_DB:
        return (f"warning: only {gain:+.2f} dB better than B-spline on validation (less than "
                f"{BARELY_BETTER_DB:g} dB): hardly worth it over B-spline interpolation")
    return None


def model_card_text(metadata: ModelMetadata | dict[str, Any], name: str | None = None) -> str:
    """A Markdown card written from a model file's metadata (typed, or the header's map): what it is, its scales,
    how it was trained and how it scored against the B-spline baseline on its validation subjects."""
    metadata = ModelMetadata.coerce(metadata)
    name = name or metadata.name or "model"
    scales_text = "any" if metadata.scales is None else " ".join(format_scale(s) for s in metadata.scales)
    family = metadata.family or "?"
    parameters = "?" if metadata.parameters is None else metadata.parameters
    lines = [f"# {name}", "", metadata.description or metadata.family, "",
             f"- family: {family}, {parameters} parameters",
             f"- scales: {scales_text}"]
    conditioning = metadata.conditioning
    if isinstance(conditioning, dict) and conditioning.get("variables"):
        names = [f"{v.get('name')} ({'/'.join(v['categories']) if v.get('categories') else v.get('kind')})"
                 for v in conditioning["variables"]]
        lines.append(f"- conditioned on: {', '.join(names)} (enhance --context; the slice position is automatic)")
    degradation = metadata.degradation
    if isinstance(degradation, dict) and degradation:
        lines.append(f"- trained for: {', '.join(f'{k} {v}' for k, v in degradation.items())}")
    training = metadata.training or {}
    if training:
        subjects = f"{len(training.get('train', []))} training, {len(training.get('validation', []))} validation"
        lines.append(f"- training: {training.get('steps', '?')} steps (best at step {training.get('best_step', '?')})"
                     f" on {subjects} subjects")
    if (voxels := metadata.trained_voxel_mm) is not None:
        lines.append(f"- trained on high-resolution voxels of {format_voxel_range(voxels)} mm (enhance warns when an "
                     "output's voxels lie more than 2x outside)")
    validation = metadata.validation
    if "psnr" in validation and "baseline_psnr" in validation:
        gain = validation["psnr"] - validation["baseline_psnr"]
        lines.append(f"- validation PSNR {validation['psnr']:.2f} dB (B-spline {validation['baseline_psnr']:.2f} dB, "
                     f"{gain:+.2f} dB); SSIM {validation.get('ssim', float('nan')):.4f}")
        verdict = baseline_verdict(validation)
        if verdict:
            lines.append(f"- **{verdict}**")
    lines.append(f"- created {metadata.created or '?'} with engine {metadata.engine_version or '?'}, "
                 f"version {metadata.version or '?'}")
    lines += ["", "Outputs of this model are AI-generated, not acquired: compare them with the input."]
    return "\n".join(lines) + "\n"


def write_model_card(model_path: str | os.PathLike) -> Path:
    """Write the card of a model file beside it (``<stem>.md``, from its metadata, atomically); returns its path."""
    model_path = Path(model_path)
    card = model_path.with_suffix(CARD_EXTENSION)
    temporary = card.with_name(f".{card.name}.partial")
    try:
        temporary.write_text(model_card_text(ModelMetadata.from_header(read_metadata(model_path))), encoding="utf-8")
        os.replace(temporary, card)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write model card {card}: {error.strerror or error}") from None
    return card


def resolve_model(model: str | os.PathLike, scale: Scale) -> ModelEntry:
    """Find the model file for a shipped or user model name, ``"default"`` or a path.

    ``"default"`` picks the shipped model that the manifest (``weights/models.json``) marks ``default_for`` the
    kind of scale requested (``"isotropic"`` or ``"anisotropic"``) and that supports ``scale``, else a shipped model
    made for that scale, else the shipped arbitrary-scale model (marked ``default_for`` ``"arbitrary"``: 2.5, 3, 4,
    1.5,1.5,3 ...), else any shipped model supporting it.

    Raises:
        ModelError: unknown name, missing file, no shipped model for that scale, or two shipped models marked
            default for the same kind of scale that both support ``scale``.
    """
    text = str(model)
    shipped = shipped_models()
    if text == DEFAULT_MODEL:
        kind = scale_kind(scale)
        candidates = [e for e in shipped if e.supports(scale)]
        preferred = _one_default([e for e in candidates if kind in e.default_for], kind, scale)
        # A model made for this very scale beats an arbitrary-scale one (marked default_for "arbitrary").
        fixed = [e for e in candidates if e.metadata.scales is not None]
        arbitrary = _one_default([e for e in candidates if ARBITRARY in e.default_for], ARBITRARY, scale)
        if preferred or fixed or arbitrary or candidates:
            return (preferred or fixed or arbitrary or candidates)[0]
        available = "; ".join(f"{e.name} ({e.scales_text()})" for e in shipped) or "none"
        raise ModelError(
            f"no shipped model does scale {format_scale(scale)} (no arbitrary-scale model is shipped: see the README's "
            f"Models section); shipped models and their scales: {available}; for this scale pass --model with a model "
            "trained for it, e.g. an ArSSR model from configs/default_arbitrary.yaml"
        )
    by_name = {e.name: e for e in shipped}
    if text in by_name:
        return by_name[text]
    path = Path(text).expanduser()
    looks_like_path = looks_like_model_path(text)
    if not looks_like_path:
        by_name.update((e.name, e) for e in user_models())
        if text in by_name:
            return by_name[text]
    if looks_like_path or path.exists():
        listed = next((e for e in shipped if e.path.resolve() == path.resolve()), None)
        if listed is not None:  # a shipped file given by path: still checked against the manifest's checksum
            return replace(listed, name=path.stem, path=path)
        source = SHIPPED if path.resolve().parent == WEIGHTS_FOLDER else USER
        return ModelEntry(path.stem, path, _read_typed(path), source)
    raise ModelError(
        f"unknown model {text!r}; use one of: {', '.join(by_name) or 'none shipped'}, or a path to a .safetensors file"
    )


def looks_like_model_path(model: str | os.PathLike) -> bool:
    """True when ``model`` is written as a file path, not a model name: it ends in ``.safetensors`` or holds a
    path separator (:func:`resolve_model` then reads that file instead of looking the name up)."""
    text = str(model)
    return Path(text).expanduser().suffix == MODEL_EXTENSION or any(sep in text for sep in (os.sep, os.altsep) if sep)


def portable_model_argument(model: str | os.PathLike) -> str:
    """``model`` as another process in another working folder resolves it the same way: a path (see
    :func:`looks_like_model_path`, or an existing file) made absolute; ``"default"`` and model names unchanged."""
    text = str(model)
    path = Path(text).expanduser()
    is_path = text != DEFAULT_MODEL and (looks_like_model_path(text) or path.exists())
    return str(path.resolve()) if is_path else text
def _one_default(marked: list[ModelEntry], kind: str, scale: Scale) -> list[ModelEntry]:
    if len(marked) > 1:
        names = " and ".join(e.name for e in marked)
        raise ModelError(
            f"shipped models {names} are all marked default_for {kind} and all do scale {format_scale(scale)}: "
            f"the default is ambiguous; keep one mark in {WEIGHTS_FOLDER / MANIFEST_NAME} (scripts/ship_model.py "
            "--default-for moves it), or pass --model")
    return marked


def _read_typed(path: Path) -> ModelMetadata:
    try:
        return ModelMetadata.from_header(read_metadata(path))
    except ValueError as error:
        raise ModelError(f"model file {path} has unreadable metadata ({error}); export it again") from None


def check_scale(entry: ModelEntry | LoadedModel, scale: Scale) -> tuple[int, int, int]:
    """The model's :func:`axis_order` for ``scale``; raise :class:`ModelError` when it cannot produce ``scale``."""
    scales = entry.metadata.scales
    order = axis_order(scales, scale)
    if order is None:
        raise ModelError(
            f"model {entry.name} cannot do scale {format_scale(scale)}; it supports "
            f"{' or '.join(format_scale(s) for s in scales or [])} (in any axis order): pick one of those or "
            "another model (mrisuperres models)"
        )
    return order


def load_model(model: str | os.PathLike = DEFAULT_MODEL,
               scale: float | str | Sequence[float] = (2.0, 2.0, 2.0)) -> LoadedModel:
    """Resolve ``model`` (name, ``"default"`` or path), check it supports ``scale`` (``2``, ``"1,1,4"`` or
    ``(1, 1, 4)``, ``(i, j, k)`` order, see :func:`~MRISuperResLib.imaging.geometry.parse_scale`) and load it on the
    CPU.

    Raises:
        MRISuperResError: the scale is not understood.
        ModelError: the model is unknown, cannot do ``scale``, or its file is damaged.
    """
    scale = parse_scale(scale)
    entry = resolve_model(model, scale)
    check_scale(entry, scale)
    from .checkpoint import load_model_file

    loaded = load_model_file(entry.path)
    # load_model_file hashes the whole file anyway (for provenance), so this check costs nothing extra.
    if entry.sha256 is not None and loaded.file_sha256 != entry.sha256:
        raise ModelError(f"shipped model file {entry.path} does not match its SHA-256 in "
                         f"{WEIGHTS_FOLDER / MANIFEST_NAME} (damaged or replaced); reinstall the extension")
    if entry.path.parent == WEIGHTS_FOLDER:
        loaded.metadata.shipped = True
    _fill_voxel_range(loaded.metadata, entry.metadata.trained_voxel_mm)  # the manifest's, via the entry
    return loaded
