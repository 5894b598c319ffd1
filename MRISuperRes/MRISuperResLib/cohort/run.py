"""Run a cohort through one loaded model, with reading and writing overlapped with the network.

Three stages per scan: *prepare* (hash the input, decide skip / redo / refuse from the sidecars, read the volume),
*enhance* (:func:`~.enhance.enhance_volume`: the network, its B-spline baseline and consistency check), *write*
(:func:`~MRISuperResLib.engine.output_writer.write_outputs`: staged and renamed into place, all or nothing). The next scan is prepared
on a reader thread and the previous result written on a writer thread while the current scan is in the network, so on
a busy GPU or CPU the network rarely waits for the disk. At most one prepared input and one result being written
are held besides the scan in the network.

A bad scan (unreadable, too small, a write that fails) becomes a ``failed`` outcome and the cohort goes on.
``KeyboardInterrupt`` (Ctrl-C, or SIGTERM turned into it by the CLI) stops after the result being written is
committed: a stopped cohort loses at most the scan that was in the network.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..engine.checkpoint import LoadedModel
from ..engine.device import precision_name, select_device
from .plan import JOB_KEY, CohortItem, completion_state, input_sha256, job_record, read_sidecar
from ..engine.enhance import EnhanceResult, check_targets, enhance_volume
from ..errors import MRISuperResError, OutputError
from ..imaging.geometry import Scale, format_scale
from ..engine.options import EnhanceOptions
from ..engine.output_writer import write_outputs
from ..imaging.volume import Volume
from ..imaging.volume_io import read_volume


@dataclass
class ScanOutcome:
    """What happened to one scan.

    Attributes:
        index: position in the cohort (this shard's list).
        item: the scan.
        status: ``done``, ``skipped`` (already complete) or ``failed``.
        error: one-line reason of a failure.
        summary: the run summary (:meth:`~.enhance.EnhanceResult.summary`; for a skipped scan, its sidecar's).
        input_sha256: SHA-256 of the input's bytes ("" when it could not be read).
        seconds: time spent on the scan in this run (prepare + enhance + write; they overlap other scans').
        network_seconds: time in the network alone (``timings["inference"]``).
        enhance_seconds: time in :func:`~.enhance.enhance_volume` (network, baseline, consistency).
        warnings: messages for the user.
    """

    index: int
    item: CohortItem
    status: str
    error: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    input_sha256: str = ""
    seconds: float = 0.0
    network_seconds: float = 0.0
    enhance_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


@dataclass
class CohortRun:
    """A finished (or stopped) cohort run: outcomes in cohort order and the wall time."""

    outcomes: list[ScanOutcome]
    wall_seconds: float

    def count(self, status: str) -> int:
        """How many scans ended with ``status``."""
        return sum(outcome.status == status for outcome in self.outcomes)

    @property
    def flagged(self) -> list[ScanOutcome]:
        """Scans whose consistency NRMSE is above the model's calibrated threshold."""
        return [o for o in self.outcomes if o.status != "failed" and o.summary.get("consistency_suspicious")]

    @property
    def network_busy(self) -> float:
        """Share of the wall time the network was running (0..1)."""
        return sum(o.network_seconds for o in self.outcomes) / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def enhance_busy(self) -> float:
        """Share of the wall time spent in enhance (network, B-spline baseline, consistency) (0..1)."""
        return sum(o.enhance_seconds for o in self.outcomes) / self.wall_seconds if self.wall_seconds else 0.0


@dataclass
class _Prepared:
    outcome: ScanOutcome
    volume: Volume | None = None
    replace: bool = False


def job_options(model: LoadedModel, scale: Scale, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options that change an output's voxels, as recorded in its sidecar and compared on resume.

    Those :meth:`~..engine.options.EnhanceOptions.recorded` names: device, tile size and threads are left out,
    they change the speed, not the result (tiles join exactly). ``mask_background=None`` is resolved to the model's
    default and ``projection=None`` to ``True`` (the engine's default), so that the record says what ran.
    ``precision`` is recorded as the arithmetic that runs (``float32``, ``bfloat16`` or ``float16``), and only where
    it differs from what ``auto`` runs on the same device: ``auto`` and ``float32`` on a CPU, or ``bfloat16`` on a CPU
    without the instructions, give the same voxels and the same record as sidecars written before the option existed.
    """
    recorded = EnhanceOptions.split(options)[0].recorded()
    asked = recorded.pop("precision", "auto")
    device = str(options.get("device", "auto"))
    ran, default = select_device(device, asked).autocast_dtype, select_device(device).autocast_dtype
    if ran != default:
        recorded["precision"] = precision_name(ran)
    if recorded.get("mask_background") is None:
        recorded["mask_background"] = bool(model.metadata.mask_background)
    if "projection" in recorded and recorded["projection"] is None:
        recorded["projection"] = True
    return {"scale": format_scale(scale), **recorded}


def _one_line(error: BaseException) -> str:
    if isinstance(error, MRISuperResError):
        return str(error)
    if isinstance(error, MemoryError) or "out of memory" in str(error).lower():
        return "out of memory; try a smaller --tile or --device cpu"
    return f"unexpected {type(error).__name__}: {' '.join(str(error).split())[:300]}"


def run_cohort(
    items: Sequence[CohortItem],
    model: LoadedModel,
    scale: Scale,
    *,
    options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    sidecar: bool = True,
    compress: bool = True,
    overlap_io: bool = True,
    on_start: Callable[[int, CohortItem], None] | None = None,
    on_progress: Callable[[int, float, str], None] | None = None,
    on_finish: Callable[[ScanOutcome], None] | None = None,
) -> CohortRun:
    """Enhance every item with ``model``; never stops for one bad scan.

    Args:
        items: the scans, in the order to run them.
        model: the loaded model (loaded once for the whole cohort).
        scale: per-axis scale.
        options: keyword options of :func:`~.enhance.enhance_volume` (``device``, ``tile``, ``overlap``,
            ``threads``, ``keep_dtype``, ``mask_background``, ``flip_ensemble``).
        overwrite: replace existing outputs, even complete ones or another job's.
        sidecar: write JSON sidecars (without them nothing can be recognised as complete: existing outputs are
            refused unless ``overwrite``).
        overlap_io: prepare the next scan and write the previous one on threads while the network runs; false
            runs the three stages one after the other (for comparison).
        on_start: called when a scan enters the network, ``(index, item)``.
        on_progress: ``(index, fraction of the scan 0..1, stage text)`` during a scan.
        on_finish: called once per scan with its outcome, in completion order.

    Returns:
        The outcomes in cohort order. ``KeyboardInterrupt`` propagates after the result being written is
        committed and reported through ``on_finish``.
    """
    options = dict(options or {})
    record_options = job_options(model, scale, options)
    finished: dict[int, ScanOutcome] = {}

    def finish(outcome: ScanOutcome) -> None:
        finished[outcome.index] = outcome
        if on_finish is not None:
            on_finish(outcome)

    def prepare(index: int, item: CohortItem) -> _Prepared:
        start = time.perf_counter()
        outcome = ScanOutcome(index, item, "failed")
        try:
            outcome.input_sha256 = input_sha256(item.input)
            job = {**record_options, "outputs": sorted(item.targets)}
            state = completion_state(item, outcome.input_sha256, model.file_sha256, job, sidecar)
            if state == "complete" and not overwrite:
                outcome.status = "skipped"
                outcome.summary = dict((read_sidecar(item.output) or {}).get("run", {}))
                return _Prepared(outcome)
            if state == "foreign" and not overwrite:
                raise OutputError(f"output {item.output} (or a companion) exists from another run (other input, "
                                  "model or options, or no sidecar); pass --overwrite to replace it")
            replace = overwrite or state == "partial"
            for path in item.targets.values():
                path.parent.mkdir(parents=True, exist_ok=True)
            check_targets(item.input, dict(item.targets), overwrite=replace, sidecar=sidecar)
            volume = read_volume(item.input)
            return _Prepared(outcome, volume, replace)
        except Exception as error:  # one bad scan must not stop the cohort
            outcome.error = _one_line(error)
            return _Prepared(outcome)
        finally:
            outcome.seconds = time.perf_counter() - start

    def write(prepared: _Prepared, result: EnhanceResult) -> ScanOutcome:
        outcome = prepared.outcome
        start = time.perf_counter()
        try:
            job = job_record(outcome.item.input, outcome.input_sha256, model.file_sha256,
                             {**record_options, "outputs": sorted(outcome.item.targets)})
            write_outputs(result, prepared.volume, dict(outcome.item.targets), overwrite=prepared.replace,
                          sidecar=sidecar, sidecar_extra={JOB_KEY: job}, compress=compress)
            outcome.status = "done"
        except Exception as error:
            outcome.status, outcome.error = "failed", _one_line(error)
        outcome.seconds += time.perf_counter() - start
        outcome.summary = result.summary()
        outcome.summary["timings_s"]["write"] = round(time.perf_counter() - start, 3)
        return outcome

    wall_start = time.perf_counter()
    reader = ThreadPoolExecutor(1, thread_name_prefix="mrisuperres-read") if overlap_io else None
    writer = ThreadPoolExecutor(1, thread_name_prefix="mrisuperres-write") if overlap_io else None
    writing: Future[ScanOutcome] | None = None
    upcoming: Future[_Prepared] | None = None

    def collect_write() -> None:
        nonlocal writing
        if writing is not None:
            # Cleared only once its result is in: a stop while waiting here still commits and reports it below.
            outcome = writing.result()
            with _signals_held():
                writing = None
                finish(outcome)

    try:
        if reader is not None and items:
            upcoming = reader.submit(prepare, 0, items[0])
        for index, item in enumerate(items):
            if reader is not None:
                assert upcoming is not None
                prepared = upcoming.result()
                upcoming = reader.submit(prepare, index + 1, items[index + 1]) if index + 1 < len(items) else None
            else:
                prepared = prepare(index, item)
            outcome = prepared.outcome
            if prepared.volume is None:
                finish(outcome)
                continue
            if on_start is not None:
                on_start(index, item)
            start = time.perf_counter()
            try:
                progress = (lambda f, text, i=index: on_progress(i, f, text)) if on_progress else None
                result = enhance_volume(prepared.volume, model, scale, source_name=item.input.name,
                                        progress=progress, **options)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as error:
                outcome.error = _one_line(error)
                outcome.seconds += time.perf_counter() - start
                finish(outcome)
                continue
            outcome.enhance_seconds = time.perf_counter() - start
            outcome.network_seconds = float(result.timings.get("inference", 0.0))
            outcome.seconds += outcome.enhance_seconds
            outcome.warnings = list(result.warnings)
            collect_write()
            if writer is not None:
                with _signals_held():  # a stop between submitting and remembering the write would lose its row
                    writing = writer.submit(write, prepared, result)
            else:
                finish(write(prepared, result))
        collect_write()
    finally:
        if upcoming is not None:
            upcoming.cancel()
        if reader is not None:
            reader.shutdown(wait=False, cancel_futures=True)
        if writer is not None:
            # A result being written is a finished scan: commit it (and report it) before stopping.
            if writing is not None:
                try:
                    finish(writing.result())
                except Exception:  # noqa: BLE001 - already stopping; the scan is redone next time
                    pass
            writer.shutdown(wait=True)
    wall = time.perf_counter() - wall_start
    return CohortRun([finished[i] for i in sorted(finished)], wall)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM (POSIX, main thread) until the block ends; elsewhere a no-op."""
    hold = getattr(signal, "pthread_sigmask", None)
    if hold is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = hold(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        hold(signal.SIG_SETMASK, previous)
