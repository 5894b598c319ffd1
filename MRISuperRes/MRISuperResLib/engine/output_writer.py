"""Writing an enhance run's outputs, all or nothing, partly while the network still runs.

Every file is staged in a hidden folder beside its target (:func:`~MRISuperResLib.imaging.volume_io.staging_folder`), flushed, read back
and compared, and renamed into place only when all were written (:func:`~MRISuperResLib.imaging.volume_io.commit_staged`). An output
known before the network has run (the B-spline baseline) can be staged early on an idle-priority thread
(:mod:`.idle_worker`), so its compression, flushing and read-back use CPU time the network leaves unused; the
result and its difference map are staged while the consistency map is computed.
"""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..imaging.dicom_io import DicomSeries
from ..imaging.geometry import format_scale
from .idle_worker import IdleExecutor
from .outputs import BY_KEY
from ..imaging.output_paths import sidecar_path
from ..imaging.provenance import short_description
from ..imaging.verified_write import write_text_verified
from ..imaging.volume import Volume
from ..imaging.volume_io import commit_staged, stage_volume, staging_folder

if TYPE_CHECKING:
    from .result import EnhanceResult

#: The maps shown in the figure after the input, in column order (titled by their labels).
FIGURE_MAPS = ("baseline", "sr", "difference", "consistency", "uncertainty")


class OutputStaging:
    """The staging folders of one run's outputs; a context manager that removes them however the run ends.

    Args:
        planned: map key (:data:`.outputs.OUTPUT_MAPS`: ``sr``, ``baseline`` ...) -> path to write (from
            :func:`.enhance.check_targets`).
        figure: the PNG figure's path, or ``None``.
        overwrite: replace existing targets at commit.
        sidecar: write a JSON sidecar beside each volume (``<full name>.json``).
        sidecar_extra: top-level keys added to every sidecar.
        dicom_source: the input's DICOM series, so DICOM outputs become derived series of its patient and study.
        compress: compress the formats that allow it.
    """

    def __init__(
        self,
        planned: dict[str, Path],
        figure: Path | None = None,
        *,
        overwrite: bool = False,
        sidecar: bool = True,
        sidecar_extra: dict[str, Any] | None = None,
        dicom_source: DicomSeries | None = None,
        compress: bool = True,
    ) -> None:
        self.planned, self.figure, self.overwrite = dict(planned), figure, overwrite
        self.sidecar, self.sidecar_extra = sidecar, dict(sidecar_extra or {})
        self.dicom_source, self.compress = dicom_source, compress
        self._stack = contextlib.ExitStack()
        self._staging: dict[Path, Path] = {}
        self._early: dict[str, tuple[Volume, Future]] = {}
        self._idle: IdleExecutor | None = None
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> OutputStaging:
        folders = sorted({path.parent.resolve() for path in [*self.planned.values(), *filter(None, [self.figure])]})
        with self._stack:
            self._staging = {folder: self._stack.enter_context(staging_folder(folder)) for folder in folders}
            self._stack = self._stack.pop_all()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for pool in (self._idle, self._pool):
            if pool is not None:
                # Files being staged early must stop touching the folders before they are removed.
                if isinstance(pool, IdleExecutor):
                    pool.promote()
                pool.shutdown(wait=True, cancel_futures=True)
        self._stack.close()

    def stage_early(self, role: str, output: Volume) -> None:
        """Start staging ``output`` for ``role`` now, on another thread (nothing when ``role`` is not planned).

        The baseline (known before the network runs) is staged at idle priority; any other output means the
        network is done, so it is staged at normal priority and the baseline's staging is promoted. ``output`` is
        the very volume later found in the result for that role (otherwise it is staged again at the end).
        """
        if role != "baseline" and self._idle is not None:
            self._idle.promote()
        if role not in self.planned:
            return
        if role == "baseline":
            self._idle = self._idle or IdleExecutor()
            pool: ThreadPoolExecutor = self._idle
        else:
            self._pool = self._pool or ThreadPoolExecutor(max_workers=2, thread_name_prefix="stage")
            pool = self._pool
        self._early[role] = (output, pool.submit(self._stage, role, output))

    def finish(self, result: EnhanceResult, volume: Volume) -> None:
        """Stage ``result``'s remaining outputs, the sidecars and the figure, then commit everything.

        Fills ``result.paths`` and ``result.timings["write"]``. ``volume`` is the input (for the figure).

        Raises:
            OutputError: a write failed or did not read back (nothing is committed).
        """
        start = time.perf_counter()
        outputs = result.maps
        written = {role: path for role, path in self.planned.items() if role in outputs}
        result.paths = {role: str(path) for role, path in written.items()}
        late = [role for role in written if role not in self._early or self._early[role][0] is not outputs[role]]
        with ThreadPoolExecutor(max_workers=max(1, min(4, len(late)))) as pool:
            jobs = [pool.submit(self._stage, role, outputs[role]) for role in late]
            jobs += [future for role, (_output, future) in self._early.items() if role not in late]
            for job in jobs:
                job.result()  # the first failure is raised; the staging folders are removed on the way out
        for role, path in written.items():
            if self.sidecar:
                record = {"provenance": provenance_of(outputs[role]), "run": result.summary(), **self.sidecar_extra}
                side = sidecar_path(path)
                write_text_verified(self._folder(path) / side.name, json.dumps(record, indent=2) + "\n", side)
        if self.figure is not None:
            from .figure import save_figure

            panels = {"input": volume, **{BY_KEY[key].label: result.maps[key] for key in FIGURE_MAPS
                                          if key in result.maps}}
            # save_figure flushes and decodes what it wrote before it counts.
            save_figure(self._folder(self.figure) / self.figure.name, panels,
                        title=f"{result.model.name} x{format_scale(result.scale)}: AI-generated, not acquired")
            result.paths["figure"] = str(self.figure)
        commit_staged(self._staging, self.overwrite)
        result.timings["write"] = time.perf_counter() - start

    def _folder(self, path: Path) -> Path:
        return self._staging[path.parent.resolve()]

    def _stage(self, role: str, output: Volume) -> None:
        path = self.planned[role]
        stage_volume(output, self._folder(path), path.name, description=short_description(provenance_of(output)),
                     dicom_source=self.dicom_source, compress=self.compress)


def write_outputs(result: EnhanceResult, volume: Volume, planned: dict[str, Path], figure: Path | None = None,
                  **options: Any) -> None:
    """Write ``result``'s outputs (role -> path from :func:`.enhance.check_targets`), sidecars and figure, all or
    nothing; ``options`` are those of :class:`OutputStaging`. ``volume`` is the input (for the figure)."""
    with OutputStaging(planned, figure, **options) as staging:
        staging.finish(result, volume)


def provenance_of(output: Volume) -> dict[str, str]:
    """An output's provenance fields (its ``MRISuperRes.*`` metadata without the prefix)."""
    return {k.partition(".")[2]: v for k, v in output.metadata.items()}
