"""``mrisuperres enhance`` on a cohort: options, progress display, manifest rows and the end-of-cohort summary.

A run is a cohort when it has several inputs, a folder of volumes, ``--inputs LIST``, ``--recursive`` or
``--glob``; OUTPUT is then a folder. The model loads once; see :mod:`.cohort` (inputs, shards, resume) and
:mod:`MRISuperResLib.cohort.run` (the overlapped pipeline). Exit status 0 when no scan failed, 1 when any did, 130 when
interrupted (the scans finished so far are committed and in the manifest).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.options import EnhanceOptions
from ..engine.outputs import OUTPUT_MAPS
from ..errors import InputError

if TYPE_CHECKING:  # the engine (torch) loads only when a cohort runs: building the parser stays light
    from ..cohort.plan import CohortItem
    from ..cohort.run import CohortRun, ScanOutcome
    from ..imaging.geometry import Scale

#: The ``enhance`` options that name one output file (refused with several inputs): each map's, and the figure's.
SINGLE_FILE_OPTIONS = (*(output.key for output in OUTPUT_MAPS if output.option is not None), "figure")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the cohort options to the ``enhance`` parser."""
    group = parser.add_argument_group("cohorts (several inputs, a folder, or --inputs; OUTPUT is a folder)")
    group.add_argument("--inputs", metavar="LIST", type=Path,
                       help="a text file with one input per line, or a CSV with an 'input' column and an optional "
                       "'output' column (name in the output folder); relative paths are relative to the list")
    group.add_argument("--recursive", action="store_true", help="search input folders' sub-folders too (outputs "
                       "keep the relative sub-folders)")
    group.add_argument("--glob", metavar="PATTERN",
                       help="only inputs whose path relative to the input folder matches, e.g. '*_T1w.nii.gz' or "
                       "'sub-*/anat/*.nii.gz' (implies --recursive)")
    group.add_argument("--shard", metavar="I/N",
                       help="run part I of N (1-based) of the sorted cohort; default from SLURM_ARRAY_TASK_ID / "
                       "SLURM_ARRAY_TASK_COUNT inside a SLURM job array, else 1/1")
    group.add_argument("--manifest", metavar="FILE", type=Path,
                       help="append one row per scan to this CSV (or .jsonl) manifest: input, output, status, "
                       "error, seconds, device, consistency score, flagged, model SHA-256")
    group.add_argument("--progress-json", action="store_true",
                       help="print one JSON object per line on stdout for every event: start, progress, scan "
                       "(its manifest row), summary")


def wants_cohort(args: argparse.Namespace) -> bool:
    """True when ``enhance``'s arguments describe a cohort (see the module docstring)."""
    from ..cohort.plan import is_series_folder

    if args.inputs or args.recursive or args.glob:
        return True
    inputs = [Path(p) for p in args.paths[:-1]]
    return len(inputs) > 1 or (len(inputs) == 1 and inputs[0].is_dir() and not is_series_folder(inputs[0]))


def check_single_run(args: argparse.Namespace) -> None:
    """Refuse cohort-only options on a single-input run.

    Raises:
        InputError: ``--shard`` or ``--manifest`` or ``--progress-json`` without a cohort.
    """
    for name in ("shard", "manifest", "progress_json"):
        if getattr(args, name):
            raise InputError(f"--{name.replace('_', '-')} is for cohorts (several inputs, a folder or --inputs); "
                             "give OUTPUT as a folder")


def plan(args: argparse.Namespace) -> tuple[list[CohortItem], int, tuple[int, int], str]:
    """This process's items, the cohort size, the zero-based shard and where the shard came from.

    Raises:
        InputError: a bad shard, single-file companion options, an OUTPUT that is a file, no inputs.
    """
    from ..cohort.plan import parse_shard, plan_cohort, select_shard, shard_from_environment

    paths = [Path(p) for p in args.paths]
    sources, output = paths[:-1], paths[-1]
    if any(getattr(args, name) for name in SINGLE_FILE_OPTIONS):
        raise InputError(f"{'/'.join('--' + name for name in SINGLE_FILE_OPTIONS)} name one file; with several "
                         "inputs use --companions")
    if output.exists() and not output.is_dir():
        raise InputError(f"with several inputs OUTPUT must be a folder, and {output} is a file")
    if args.shard:
        shard, origin = parse_shard(args.shard), "--shard"
    else:
        found = shard_from_environment()
        shard, origin = (found, "SLURM_ARRAY_TASK_ID") if found else ((0, 1), "")
    items = plan_cohort(sources, output, input_list=args.inputs, pattern=args.glob, recursive=args.recursive,
                        companions=args.companions)
    return select_shard(items, *shard), len(items), shard, origin


def _eta_text(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Display:
    """Progress for the cohort (a bar above the per-scan bar, progress lines or JSON lines) and per-scan lines."""

    def __init__(self, args: argparse.Namespace, items: list[CohortItem], shard_text: str) -> None:
        self.args, self.items, self.shard_text = args, items, shard_text
        self.total = len(items)
        self.finished = 0
        self.processed_seconds: list[float] = []
        self.failed = 0
        self.started = time.perf_counter()
        self.cohort_bar = self.scan_bar = None
        self.bars = not (args.quiet or args.json or args.progress_lines or args.progress_json)
        if self.bars:
            from tqdm import tqdm

            # disable=None: no bars when stderr is not a terminal (logs, pipes, cluster jobs).
            self.cohort_bar = tqdm(total=self.total, desc="cohort", unit="scan", file=sys.stderr, position=0,
                                   leave=False, disable=None, dynamic_ncols=True,
                                   bar_format="{desc}: {n_fmt}/{total_fmt} scans |{bar}| {elapsed} {postfix}")

    def _emit(self, event: dict[str, Any]) -> None:
        print(json.dumps(event), flush=True)

    def eta(self) -> float | None:
        """Seconds left: the mean time of the scans processed in this run times the scans left."""
        if not self.processed_seconds:
            return None
        return (self.total - self.finished) * sum(self.processed_seconds) / len(self.processed_seconds)

    def start(self, index: int, item: CohortItem) -> None:
        if self.args.progress_json:
            self._emit({"event": "start", "index": index, "total": self.total, "input": str(item.input),
                        "output": str(item.output)})
        if self.bars and self.cohort_bar is not None and not self.cohort_bar.disable:
            from tqdm import tqdm

            if self.scan_bar is not None:
                self.scan_bar.close()
            self.scan_bar = tqdm(total=100, desc=item.input.name, unit="%", file=sys.stderr, position=1,
                                 leave=False, disable=None, dynamic_ncols=True,
                                 bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}")

    def progress(self, index: int, fraction: float, text: str) -> None:
        if self.args.progress_lines:
            from ..engine.progress import format_progress_line

            label = self.items[index].input.name
            print(format_progress_line((index + fraction) / max(self.total, 1), f"{label}: {text}"),
                  flush=True)
        elif self.args.progress_json:
            self._emit({"event": "progress", "index": index, "total": self.total, "fraction": round(fraction, 4),
                        "cohort_fraction": round((index + fraction) / max(self.total, 1), 4),
                        "stage": text})
        elif self.scan_bar is not None:
            self.scan_bar.n = round(100 * fraction, 1)
            self.scan_bar.set_postfix_str(text, refresh=False)
            self.scan_bar.refresh()

    def finish(self, outcome: ScanOutcome, row: dict[str, Any]) -> None:
        self.finished += 1
        self.failed += outcome.status == "failed"
        if outcome.status == "done":
            self.processed_seconds.append(outcome.seconds)
        name = outcome.item.input
        if self.scan_bar is not None and outcome.status != "skipped":
            self.scan_bar.close()
            self.scan_bar = None
        for warning in outcome.warnings:
            self._write_err(f"mrisuperres: warning: {name}: {warning}")
        if outcome.status == "failed":
            self._write_err(f"mrisuperres: error: {name}: {outcome.error}")
        if self.args.progress_json:
            self._emit({"event": "scan", "index": outcome.index, "finished": self.finished, "total": self.total,
                        **row})
        elif not self.args.json and outcome.status != "failed":
            self._write_out(self._scan_line(outcome))
        if self.cohort_bar is not None:
            eta = self.eta()
            self.cohort_bar.update(1)
            self.cohort_bar.set_postfix_str(
                f"ETA {_eta_text(eta) if eta is not None else '?'}" + (f", {self.failed} failed" if self.failed
                                                                      else ""))

    @staticmethod
    def _scan_line(outcome: ScanOutcome) -> str:
        target = outcome.item.output
        if outcome.status == "skipped":
            return f"{outcome.item.input} -> {target}  (skipped: already complete)"
        summary = outcome.summary
        score = summary.get("consistency_nrmse")
        score_text = f"{score:.4f}" if isinstance(score, float) and score == score else "n/a"
        flag = "  FLAGGED" if summary.get("consistency_suspicious") else ""
        return (f"{outcome.item.input} -> {target}  (x{summary.get('scale')}, {summary.get('device')}, "
                f"{outcome.seconds:.1f} s, consistency NRMSE {score_text}){flag}")

    def _write_out(self, line: str) -> None:
        if self.cohort_bar is not None:
            self.cohort_bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def _write_err(self, line: str) -> None:
        if self.cohort_bar is not None:
            self.cohort_bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        for bar in (self.scan_bar, self.cohort_bar):
            if bar is not None:
                bar.close()


def summary_payload(run: CohortRun, total: int, shard_text: str) -> dict[str, Any]:
    """Counts and file lists of a cohort run (the ``summary`` of ``--json`` and ``--progress-json``)."""
    return {
        "cohort_size": total,
        "shard": shard_text,
        "scans": len(run.outcomes),
        "done": run.count("done"),
        "skipped": run.count("skipped"),
        "failed": run.count("failed"),
        "flagged": len(run.flagged),
        "skipped_inputs": [str(o.item.input) for o in run.outcomes if o.status == "skipped"],
        "failed_inputs": [{"input": str(o.item.input), "error": o.error} for o in run.outcomes
                          if o.status == "failed"],
        "flagged_inputs": [str(o.item.input) for o in run.flagged],
        "wall_seconds": round(run.wall_seconds, 3),
        "network_busy": round(run.network_busy, 4),
    }


def print_summary(summary: dict[str, Any], planned: int) -> None:
    """The end-of-cohort summary on stderr: counts, then the skipped, failed and flagged files."""
    lines = []
    if summary["failed"]:
        lines.append(f"mrisuperres: {summary['failed']} of {planned} inputs failed")
    shard = f", shard {summary['shard']} of a cohort of {summary['cohort_size']}" if summary["shard"] != "1/1" else ""
    lines.append(f"mrisuperres: cohort summary: {summary['done']} done, {summary['skipped']} skipped, "
                 f"{summary['failed']} failed, {summary['flagged']} flagged ({planned} scans{shard}, "
                 f"{summary['wall_seconds']:.1f} s)")
    lines += [f"  failed   {entry['input']}: {entry['error']}" for entry in summary["failed_inputs"]]
    lines += [f"  skipped  {path} (already complete)" for path in summary["skipped_inputs"]]
    lines += [f"  flagged  {path} (consistency above the model's calibrated threshold)"
              for path in summary["flagged_inputs"]]
    print("\n".join(lines), file=sys.stderr, flush=True)


def run(args: argparse.Namespace, scale: Scale, model: Any,
        planned: tuple[list[CohortItem], int, tuple[int, int], str]) -> int:
    """Run the cohort ``planned`` by :func:`plan` with the loaded ``model``; return the exit status."""
    from .app import EXIT_ERROR
    from ..cohort.run import run_cohort
    from ..cohort.manifest import append_manifest_row, check_manifest, make_row

    items, total, (index, count), origin = planned
    if args.manifest is not None:
        check_manifest(args.manifest)
    shard_text = f"{index + 1}/{count}"
    if count > 1 and not (args.quiet or args.json or args.progress_json):
        print(f"mrisuperres: shard {shard_text} ({origin}): {len(items)} of {total} scans", file=sys.stderr)
    options = EnhanceOptions.from_namespace(args).check().engine_kwargs()
    display = _Display(args, items, shard_text)

    def finished(outcome: ScanOutcome) -> None:
        # Absolute paths: the manifest and its review page work from any working directory.
        row = make_row(input=os.path.abspath(outcome.item.input), output=os.path.abspath(outcome.item.output),
                       status=outcome.status, summary=outcome.summary, error=outcome.error,
                       seconds=outcome.seconds, input_sha256=outcome.input_sha256, shard=shard_text)
        if args.manifest is not None:
            append_manifest_row(args.manifest, row)
        display.finish(outcome, row)

    try:
        result = run_cohort(items, model, scale, options=options, overwrite=args.overwrite,
                            sidecar=not args.no_sidecar, compress=not args.no_compress, on_start=display.start, on_progress=display.progress,
                            on_finish=finished)
    finally:
        display.close()
    summary = summary_payload(result, total, shard_text)
    if args.progress_json:
        display._emit({"event": "summary", **summary})
    elif args.json:
        done = [{"input": str(o.item.input), **o.summary} for o in result.outcomes if o.status == "done"]
        print(json.dumps({"results": done, "failed": summary["failed_inputs"], "skipped": summary["skipped_inputs"],
                          "summary": summary}, indent=2))
    if not args.quiet or summary["failed"]:
        print_summary(summary, len(items))
    return EXIT_ERROR if summary["failed"] else 0
