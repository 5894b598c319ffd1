"""The files of a background enhance run (:mod:`.enhance_process`): the input written for the engine, the outputs
read back and put into the scene. MRML side, no Qt, no torch.

Every file lies in the run's private temporary folder, named by :data:`INPUT_FILE` and :data:`OUTPUT_FILES`
(one NRRD per output map of :data:`..engine.outputs.OUTPUT_MAPS`: NRRD keeps the ``MRISuperRes.*`` key-values).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.outputs import BY_KEY, OUTPUT_MAPS
from ..errors import OutputError
from ..imaging.geometry import Scale

if TYPE_CHECKING:
    from .outputs import EnhanceLogic, EnhanceNodes

INPUT_FILE = "input.nrrd"

#: Output file of each map in the temporary folder, by key.
OUTPUT_FILES = {output.key: output.process_file for output in OUTPUT_MAPS}


def output_arguments(folder: Path, requested: Iterable[str] = ()) -> list[str]:
    """The ``mrisuperres enhance`` arguments that write the maps into ``folder``: the SR's path (the OUTPUT), then
    ``--<key> <file>`` for every map that is not optional and for the optional ones in ``requested``."""
    wanted = set(requested)
    arguments = []
    for output in OUTPUT_MAPS:
        path = str(folder / output.process_file)
        if output.option is None:
            arguments.append(path)
        elif not output.optional or output.key in wanted:
            arguments += [output.option, path]
    return arguments


def write_volume_node(node: Any, path: Path) -> None:
    """Write a volume node to ``path`` (uncompressed NRRD) through a new storage node of the node's default
    class; the node's own storage node, modified state and file name are left as they were.

    Raises:
        OutputError: the storage node could not write the file.
    """
    # A stand-alone storage node: neither added to the scene nor referenced by the input node.
    storage = node.CreateDefaultStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)
    if not storage.WriteData(node) or not path.is_file():
        raise OutputError(f"cannot write volume {node.GetName()} to {path} for the background run; check the "
                          "free space of the temporary folder")


def load_output_files(folder: Path, keys: Iterable[str]) -> dict[str, Any]:
    """Read the outputs ``keys`` from ``folder`` with their colour windows (on a worker thread: numpy and zlib
    release the GIL), as :class:`~.volumes.LoadedVolumeFile` by key (``None`` for a file to read into its node
    instead)."""
    from .outputs import MAP_COLORS, window_percentile
    from .volumes import load_nrrd

    loaded = {}
    for key in keys:
        volume = load_nrrd(folder / OUTPUT_FILES[key])
        if volume is not None and key in MAP_COLORS:
            volume.window = window_percentile(volume.array, BY_KEY[key].signed)
        loaded[key] = volume
    return loaded


class OutputLoader:
    """Reads a finished run's output files in a worker thread (numpy and zlib release the GIL), so that the GUI
    thread only hands the arrays to nodes.

    Args:
        folder: the run's temporary folder.
        keys: the output maps the engine wrote (the ``outputs`` of its ``--json`` summary).
    """

    def __init__(self, folder: Path, keys: Iterable[str]) -> None:
        self.loaded: dict[str, Any] = {}
        #: What reading raised (reported by the caller on the GUI thread), else ``None``.
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._load, args=(folder, list(keys)),
                                        name="MRISuperRes output loader", daemon=True)

    def start(self) -> OutputLoader:
        self._thread.start()
        return self

    def wait(self, wait_s: float) -> bool:
        """Wait up to ``wait_s`` seconds; True once every file was read (or reading failed, see :attr:`error`)."""
        self._thread.join(wait_s)
        return not self._thread.is_alive()

    def _load(self, folder: Path, keys: list[str]) -> None:
        try:
            self.loaded.update(load_output_files(folder, keys))
        except BaseException as error:  # reported on the GUI thread
            self.error = error


def add_output_files_to_scene(logic: EnhanceLogic, volume_node: Any, folder: Path, summary: Mapping[str, Any],
                              scale: Scale, outputs: EnhanceNodes | None, loaded: Mapping[str, Any],
                              wall_time_s: float) -> EnhanceNodes:
    """Put a finished run's output files into ``logic``'s scene (all or none) with the run's summary.

    ``summary`` is the engine's ``--json`` summary; the nodes get it without the temporary ``outputs`` paths, with
    ``input`` set to the node name and ``wall_time_s`` added, and the consistency scores as attributes.

    Raises:
        OutputError: a file cannot be read (the nodes added so far are removed again).
    """
    from ..imaging.provenance import KEY_PREFIX
    from .outputs import record_scores

    scene = logic.scene
    before = {scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())}
    files = {key: folder / OUTPUT_FILES[key] for key in summary.get("outputs", {})}
    try:
        # Slicer's C++ reader puts the voxels into the nodes: no Python copy on the GUI thread.
        nodes = logic.add_output_files(volume_node, files, scale, outputs,
                                       {f"{KEY_PREFIX}source": volume_node.GetName()}, loaded)
        described = {key: value for key, value in summary.items() if key != "outputs"}
        described["input"] = volume_node.GetName()
        described["wall_time_s"] = round(wall_time_s, 3)
        nodes.summary = described
        nodes.warnings = [str(warning) for warning in described.get("warnings", [])]
        record_scores(nodes, {key: described[key] for key in ("consistency_nrmse", "baseline_consistency_nrmse")})
    except BaseException:
        _remove_nodes_added_since(scene, before)
        raise
    return nodes


def _remove_nodes_added_since(scene: Any, before: set[str]) -> None:
    added = [scene.GetNthNode(index) for index in range(scene.GetNumberOfNodes())]
    for node in reversed(added):
        if node is not None and node.GetID() not in before:
            scene.RemoveNode(node)
