"""Cohorts: inputs, shards, resume, the overlapped pipeline, manifests, interruption and the Slicer console loop.

Requirement under test: ``mrisuperres enhance`` on a folder tree, a list or a CSV runs every scan once across
shards, skips scans whose outputs are complete (same input, model and options in their sidecar), redoes a
commit cut short, never replaces another run's output without ``--overwrite``, keeps going after a bad scan
(and says so in the exit status), loses at most the scan in flight when stopped, and writes one manifest row per
scan.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import make_tiny_model, run_main, write_scan
from MRISuperResLib.cli import app as cli
from MRISuperResLib.cohort.plan import (
    completion_state,
    input_sha256,
    parse_shard,
    plan_cohort,
    read_input_list,
    select_shard,
    shard_from_environment,
)
from MRISuperResLib.errors import InputError, OutputError
from MRISuperResLib.cohort.manifest import (FIELDS, append_manifest_row, check_manifest, latest_rows, make_row,
                                            read_manifest)

ROOT = Path(__file__).resolve().parents[2]
PARTIAL_PREFIX = ".mrisuperres-partial-"


def staging_left(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{PARTIAL_PREFIX}*")]


def mtimes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """``scans/`` with five inputs in sub-folders (two share a file name) and a note that is not a volume."""
    root = tmp_path / "scans"
    write_scan(root / "sub-01" / "anat" / "T1w.nii.gz", seed=1)
    write_scan(root / "sub-02" / "anat" / "T1w.nii.gz", seed=2)
    write_scan(root / "sub-02" / "anat" / "T2w.nrrd", seed=3)
    write_scan(root / "sub-03" / "T1w.mha", seed=4)
    write_scan(root / "top.nii.gz", seed=5)
    (root / "sub-01" / "notes.txt").write_text("not a volume\n")
    return root


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return make_tiny_model(tmp_path / "tiny-x2.safetensors")


# ------------------------------------------------------------------------------------------ planning, shards


def test_plan_keeps_sub_folders_and_shards_partition_the_cohort(tree, tmp_path):
    items = plan_cohort([tree], tmp_path / "out", recursive=True)
    assert [item.key for item in items] == ["sub-01/anat/T1w_sr.nii.gz", "sub-02/anat/T1w_sr.nii.gz",
                                            "sub-02/anat/T2w_sr.nrrd", "sub-03/T1w_sr.mha", "top_sr.nii.gz"]
    assert items[0].output == tmp_path / "out" / "sub-01" / "anat" / "T1w_sr.nii.gz"
    for count in (1, 2, 3, 5, 7):
        shards = [select_shard(items, index, count) for index in range(count)]
        keys = [item.key for shard in shards for item in shard]
        assert sorted(keys) == sorted(item.key for item in items) and len(keys) == len(set(keys))
        # the same shard of the same cohort is the same list whatever order the inputs were found in
        assert select_shard(list(reversed(items)), 0, count) == shards[0]
    # without --recursive only the folder's own files
    assert [item.key for item in plan_cohort([tree], tmp_path / "out")] == ["top_sr.nii.gz"]


def test_glob_selects_inputs_by_relative_path(tree, tmp_path):
    keys = [i.key for i in plan_cohort([tree], tmp_path / "o", pattern="*T1w*")]
    assert keys == ["sub-01/anat/T1w_sr.nii.gz", "sub-02/anat/T1w_sr.nii.gz", "sub-03/T1w_sr.mha"]
    keys = [i.key for i in plan_cohort([tree], tmp_path / "o", pattern="sub-*/anat/*.nii.gz")]
    assert keys == ["sub-01/anat/T1w_sr.nii.gz", "sub-02/anat/T1w_sr.nii.gz"]
    with pytest.raises(InputError, match="matching"):
        plan_cohort([tree], tmp_path / "o", pattern="*.dcm")


def test_text_list_and_csv_with_output_names(tree, tmp_path):
    listing = tmp_path / "lists" / "cohort.txt"
    listing.parent.mkdir()
    listing.write_text(f"# two scans\n../scans/top.nii.gz\n\n{tree / 'sub-03' / 'T1w.mha'}\n")
    assert [p for p, _ in read_input_list(listing)] == [listing.parent / "../scans/top.nii.gz",
                                                         tree / "sub-03" / "T1w.mha"]
    table = tmp_path / "lists" / "cohort.csv"
    table.write_text("input,output\n../scans/sub-01/anat/T1w.nii.gz,s01_T1w_sr.nii.gz\n"
                     "../scans/sub-02/anat/T1w.nii.gz,s02/T1w_sr.nrrd\n../scans/top.nii.gz,\n")
    items = plan_cohort([], tmp_path / "out", input_list=table)
    assert [i.key for i in items] == ["s01_T1w_sr.nii.gz", "s02/T1w_sr.nrrd", "top_sr.nii.gz"]
    table.write_text("path\nx.nii.gz\n")
    with pytest.raises(InputError, match="no 'input' column"):
        read_input_list(table)


def test_two_inputs_writing_one_output_are_refused_before_any_work(tree, tmp_path):
    table = tmp_path / "clash.csv"
    table.write_text("input,output\nscans/top.nii.gz,same.nii.gz\nscans/sub-03/T1w.mha,same.nii.gz\n")
    with pytest.raises(InputError, match="would both write"):
        plan_cohort([], tmp_path / "out", input_list=table)


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_bad_shard_is_a_one_line_error(text):
    with pytest.raises(InputError, match="--shard"):
        parse_shard(text)


def test_slurm_array_variables_give_the_shard():
    assert parse_shard("2/4") == (1, 4)
    assert shard_from_environment({}) is None
    # --array=1-4: ids 1..4, min 1
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    assert shard_from_environment(env) == (2, 4)
    # --array=0-30:10: ids 0, 10, 20, 30
    env = {"SLURM_ARRAY_TASK_ID": "20", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0",
           "SLURM_ARRAY_TASK_STEP": "10"}
    assert shard_from_environment(env) == (2, 4)
    with pytest.raises(InputError, match="not one of 2 tasks"):
        shard_from_environment({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "2"})


# -------------------------------------------------------------------------------------------- running


def test_two_shards_cover_every_input_exactly_once(tree, model, tmp_path, capsys, monkeypatch):
    out, manifest = tmp_path / "out", tmp_path / "manifest.csv"
    before = mtimes(tree)
    code, _, err = run_main(capsys, "enhance", tree, out, "--recursive", "--model", model, "--threads", "1",
                            "--shard", "1/2", "--manifest", manifest, "--quiet")
    assert code == 0, err
    # the second task of a SLURM array (--array=1-2) finds its shard in the environment
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    code, _, err = run_main(capsys, "enhance", tree, out, "--recursive", "--model", model, "--threads", "1",
                            "--manifest", manifest)
    assert code == 0, err
    assert "shard 2/2 (SLURM_ARRAY_TASK_ID): 2 of 5 scans" in err
    rows = read_manifest(manifest)
    volumes = [p for p in tree.rglob("*") if p.suffix in (".gz", ".nrrd", ".mha")]
    assert sorted(r["input"] for r in rows) == sorted(map(str, volumes)) and len(volumes) == 5
    assert {r["status"] for r in rows} == {"done"}
    assert sorted(r["shard"] for r in rows) == ["1/2", "1/2", "1/2", "2/2", "2/2"]
    for row in rows:
        assert Path(row["output"]).is_file() and row["device"].startswith("cpu") and row["seconds"] > 0
        assert row["input_sha256"] == input_sha256(row["input"]) and len(row["model_sha256"]) == 64
        assert row["consistency_nrmse"] > 0 and row["flagged"] is None  # the tiny model has no threshold
        sidecar = json.loads(Path(row["output"]).with_name(Path(row["output"]).name + ".json")
                             .read_text())
        assert sidecar["job"]["input_sha256"] == row["input_sha256"]
        assert sidecar["job"]["options"]["scale"] == "2"
    assert len(list(out.rglob("*_sr.*"))) == 2 * 5  # an SR and its sidecar per input
    assert mtimes(tree) == before
    assert staging_left(tmp_path) == []


def test_corrupt_file_in_the_middle_fails_alone(model, tmp_path, capsys):
    scans = tmp_path / "scans"
    write_scan(scans / "a.nii.gz", seed=1)
    (scans / "b.nii.gz").write_bytes(b"\x1f\x8b not really gzip" * 50)
    write_scan(scans / "c.nii.gz", seed=2)
    manifest = tmp_path / "m.jsonl"
    code, out, err = run_main(capsys, "enhance", scans, tmp_path / "out", "--model", model, "--threads", "1",
                              "--manifest", manifest, "--quiet")
    assert code == cli.EXIT_ERROR
    assert "Traceback" not in err
    rows = {Path(r["input"]).name: r for r in read_manifest(manifest)}
    assert [rows[n]["status"] for n in ("a.nii.gz", "b.nii.gz", "c.nii.gz")] == ["done", "failed", "done"]
    assert "b.nii.gz" in rows["b.nii.gz"]["error"] and ("corrupt" in rows["b.nii.gz"]["error"]
                                                    or "cannot read" in rows["b.nii.gz"]["error"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_sr.nii.gz", "a_sr.nii.gz.json", "c_sr.nii.gz",
                                                                    "c_sr.nii.gz.json"]
    errors = [line for line in err.splitlines() if line.startswith("mrisuperres: error:")]
    assert len(errors) == 1 and "b.nii.gz" in errors[0]
    assert "1 of 3 inputs failed" in err and "2 done, 0 skipped, 1 failed, 0 flagged" in err
    assert f"failed   {scans / 'b.nii.gz'}" in err
    assert f"{scans / 'a.nii.gz'} -> {tmp_path / 'out' / 'a_sr.nii.gz'}" in out


def test_rerun_skips_complete_scans_and_never_replaces_another_runs_output(model, tmp_path, capsys):
    scans, out, manifest = tmp_path / "scans", tmp_path / "out", tmp_path / "m.csv"
    for n in range(3):
        write_scan(scans / f"s{n}.nii.gz", seed=n)
    base = ["enhance", scans, out, "--model", model, "--threads", "1", "--manifest", manifest, "--quiet"]
    assert run_main(capsys, *base)[0] == 0
    written = mtimes(out)
    code, stdout, err = run_main(capsys, *base[:-1])
    assert code == 0, err
    assert stdout.count("(skipped: already complete)") == 3
    assert "0 done, 3 skipped, 0 failed" in err and f"skipped  {scans / 's1.nii.gz'}" in err
    assert mtimes(out) == written
    rows = read_manifest(manifest)
    assert [r["status"] for r in rows[3:]] == ["skipped"] * 3
    assert all(r["consistency_nrmse"] == rows[i]["consistency_nrmse"] for i, r in enumerate(rows[3:]))

    # other options: the finished outputs are another run's; refused without --overwrite
    code, _, err = run_main(capsys, *base, "--flip-ensemble")
    assert code == cli.EXIT_ERROR and "exists from another run" in err and "--overwrite" in err
    assert mtimes(out) == written
    # a changed input is not complete either
    write_scan(scans / "s1.nii.gz", seed=11)
    code, _, err = run_main(capsys, *base)
    errors = [line for line in err.splitlines() if line.startswith("mrisuperres: error:")]
    assert code == cli.EXIT_ERROR and len(errors) == 1 and "s1.nii.gz: output" in errors[0]
    code, _, err = run_main(capsys, *base, "--overwrite")
    assert code == 0, err
    assert all(after > written[name] for name, after in mtimes(out).items())
    assert [r["status"] for r in read_manifest(manifest)[-3:]] == ["done"] * 3


def test_a_commit_cut_short_is_redone(model, tmp_path, capsys):
    scans, out = tmp_path / "scans", tmp_path / "out"
    for n in range(2):
        write_scan(scans / f"s{n}.nii.gz", seed=n)
    base = ["enhance", scans, out, "--model", model, "--threads", "1", "--companions", "--quiet"]
    assert run_main(capsys, *base)[0] == 0
    # as if the run had been killed between two renames of s0's commit: a companion and its sidecar missing
    (out / "s0_sr_consistency.nii.gz").unlink()
    (out / "s0_sr_consistency.nii.gz.json").unlink()
    kept = (out / "s1_sr.nii.gz").stat().st_mtime_ns
    code, stdout, err = run_main(capsys, *base[:-1])
    assert code == 0, err
    assert (out / "s0_sr_consistency.nii.gz").is_file()
    assert f"{scans / 's1.nii.gz'} -> {out / 's1_sr.nii.gz'}  (skipped" in stdout
    assert "1 done, 1 skipped" in err
    assert (out / "s1_sr.nii.gz").stat().st_mtime_ns == kept


def test_completion_state(model, tmp_path, capsys):
    scans, out = tmp_path / "scans", tmp_path / "out"
    write_scan(scans / "s.nii.gz")
    items = plan_cohort([scans], out)
    item = items[0]
    digest = input_sha256(item.input)
    options = {"scale": "2", "mask_background": False, "flip_ensemble": False, "projection": True, "keep_dtype": False,
               "overlap": 0.0, "outputs": ["sr"]}
    assert completion_state(item, digest, "x", options) == "absent"
    assert run_main(capsys, "enhance", scans, out, "--model", model, "--quiet")[0] == 0
    sha = json.loads((out / "s_sr.nii.gz.json").read_text())["provenance"]["model_sha256"]
    assert completion_state(item, digest, sha, options) == "complete"
    assert completion_state(item, digest, "0" * 64, options) == "foreign"
    assert completion_state(item, digest, sha, {**options, "scale": "3"}) == "foreign"
    # The default run recorded projection on: --projection resumes it, --no-projection is another job.
    assert completion_state(item, digest, sha, {**options, "projection": False}) == "foreign"
    assert completion_state(item, "0" * 64, sha, options) == "foreign"
    assert completion_state(item, digest, sha, options, sidecar=False) == "foreign"


def test_overlapped_and_sequential_pipelines_write_the_same_outputs(model, tmp_path):
    from MRISuperResLib.cohort.run import run_cohort
    from MRISuperResLib.engine.model_zoo import load_model

    scans = tmp_path / "scans"
    for n in range(3):
        write_scan(scans / f"s{n}.nii.gz", seed=n)
    write_scan(scans / "s1b.nii.gz", shape=(12, 3, 10))  # too small for the model: fails in the middle
    loaded = load_model(str(model), (2, 2, 2))
    results = {}
    for overlap_io in (False, True):
        out = tmp_path / f"out-{overlap_io}"
        events: list[tuple[str, str]] = []
        run = run_cohort(plan_cohort([scans], out), loaded, (2, 2, 2), options={"device": "cpu", "threads": 1},
                         overlap_io=overlap_io, on_finish=lambda o: events.append((o.item.input.name, o.status)))
        assert [(o.item.input.name, o.status) for o in run.outcomes] == [
            ("s0.nii.gz", "done"), ("s1.nii.gz", "done"), ("s1b.nii.gz", "failed"), ("s2.nii.gz", "done")]
        assert sorted(events) == sorted((o.item.input.name, o.status) for o in run.outcomes)
        assert "needs at least" in run.outcomes[2].error
        assert 0 < run.network_busy <= run.enhance_busy <= 1
        results[overlap_io] = {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
                               for p in sorted(out.glob("*.nii.gz"))}
    assert results[True].keys() == results[False].keys() and len(results[True]) == 3
    for name, array in results[True].items():
        np.testing.assert_array_equal(array, results[False][name])


def test_progress_json_lines(model, tmp_path, capsys):
    scans = tmp_path / "scans"
    for n in range(2):
        write_scan(scans / f"s{n}.nii.gz", seed=n)
    code, out, err = run_main(capsys, "enhance", scans, tmp_path / "out", "--model", model, "--progress-json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "summary" and kinds.count("scan") == 2
    progress = [e["cohort_fraction"] for e in events if e["event"] == "progress"]
    assert progress == sorted(progress) and 0 <= progress[0] and progress[-1] <= 1
    scan = next(e for e in events if e["event"] == "scan")
    assert set(FIELDS) <= set(scan) and scan["status"] == "done" and scan["total"] == 2
    assert events[-1]["done"] == 2 and events[-1]["failed"] == 0


def test_cohort_options_are_refused_for_a_single_input(model, tmp_path, capsys):
    scan = write_scan(tmp_path / "s.nii.gz")
    code, _, err = run_main(capsys, "enhance", scan, tmp_path / "s_sr.nii.gz", "--model", model,
                            "--manifest", tmp_path / "m.csv")
    assert code == cli.EXIT_ERROR and "--manifest is for cohorts" in err
    assert not (tmp_path / "s_sr.nii.gz").exists() and not (tmp_path / "m.csv").exists()


# --------------------------------------------------------------------------------------- interruption


def console_script() -> list[str]:
    candidate = Path(sys.executable).parent / "mrisuperres"
    return [str(candidate)] if candidate.is_file() else [sys.executable, "-m", "MRISuperResLib.cli"]


def test_sigterm_mid_cohort_then_rerun_finishes_the_rest(model, tmp_path, capsys):
    scans, out, manifest = tmp_path / "scans", tmp_path / "out", tmp_path / "m.csv"
    for n in range(4):
        write_scan(scans / f"s{n}.nii.gz", seed=n, shape=(16, 16, 16))
    # eight flipped passes per scan keep each scan in the network long enough to be stopped mid-cohort
    arguments = ["enhance", str(scans), str(out), "--model", str(model), "--threads", "1", "--device", "cpu",
                 "--flip-ensemble", "--manifest", str(manifest)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "MRISuperRes"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([*console_script(), *arguments, "--progress-json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            event = json.loads(line)
            if event["event"] == "scan" and event["status"] == "done":
                process.send_signal(signal.SIGTERM)
                break
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == cli.EXIT_INTERRUPTED, stderr[-2000:]
    assert "Traceback" not in stderr
    first = read_manifest(manifest)
    finished = [Path(r["input"]).name for r in first]
    assert 1 <= len(finished) < 4 and {r["status"] for r in first} == {"done"}
    assert staging_left(tmp_path) == []
    # exactly the finished scans have outputs: the one in flight left nothing
    assert sorted(p.name for p in out.glob("*_sr.nii.gz")) == sorted(n.replace(".nii.gz", "_sr.nii.gz")
                                                                     for n in finished)
    kept = mtimes(out)

    code, _, err = run_main(capsys, *arguments, "--quiet")  # the same command again
    assert code == 0, err
    second = read_manifest(manifest)[len(first):]
    assert sorted(Path(r["input"]).name for r in second) == [f"s{n}.nii.gz" for n in range(4)]
    for row in second:
        assert row["status"] == ("skipped" if Path(row["input"]).name in finished else "done")
    assert {name: mtimes(out)[name] for name in kept} == kept, "a finished scan was written again"
    assert len(list(out.glob("*_sr.nii.gz"))) == 4


# --------------------------------------------------------------------------------------------- manifest


@pytest.mark.parametrize("name", ["m.csv", "m.jsonl"])
def test_manifest_round_trip(tmp_path, name):
    path = tmp_path / "sub" / name
    summary = {"device": "cuda:0 (H200)", "consistency_nrmse": 0.0512, "consistency_threshold": 0.04,
               "consistency_suspicious": True, "model": "m", "model_sha256": "ab" * 32, "warnings": ["a, \"b\"\nc"],
               "noise_nrmse": 0.0123}
    append_manifest_row(path, input="in/a.nii.gz", output="out/a_sr.nii.gz", status="done", summary=summary,
                        seconds=1.23456, shard="1/2")
    append_manifest_row(path, make_row(input="in/b.nii.gz", output=None, status="failed",
                                       error=ValueError("bad\nfile")))
    append_manifest_row(path, input="in/a.nii.gz", output="out/a_sr.nii.gz", status="skipped", summary=summary)
    rows = read_manifest(path)
    assert [r["status"] for r in rows] == ["done", "failed", "skipped"]
    assert rows[0]["flagged"] is True and rows[0]["consistency_nrmse"] == 0.0512 and rows[0]["seconds"] == 1.235
    assert rows[0]["warnings"] == 'a, "b" c' and rows[1]["error"] == "bad file" and rows[1]["flagged"] is None
    assert rows[0]["noise_nrmse"] == 0.0123 and rows[1]["noise_nrmse"] is None
    # a re-run that skipped a finished scan keeps the row of the run that made it
    assert [r["status"] for r in latest_rows(rows)] == ["done", "failed"]
    with pytest.raises(ValueError, match="status"):
        make_row(input="a", output="b", status="ok")


def test_a_manifest_from_before_noise_nrmse_keeps_its_columns(tmp_path):
    path = tmp_path / "old.csv"
    earlier = ",".join(FIELDS[:-1])
    assert FIELDS[-1] == "noise_nrmse"
    path.write_text(earlier + "\n")
    check_manifest(path)
    append_manifest_row(path, input="x", output="y", status="done", summary={"noise_nrmse": 0.01})
    lines = path.read_text().splitlines()
    assert lines[0] == earlier and len(lines) == 2 and lines[1].count(",") == earlier.count(",")
    (row,) = read_manifest(path)
    assert row["status"] == "done" and row["noise_nrmse"] is None


def test_manifest_with_other_columns_is_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(OutputError, match="other columns"):
        append_manifest_row(path, input="x", output="y", status="done")
    assert path.read_text() == "a,b\n1,2\n"
    with pytest.raises(InputError, match="not a manifest"):
        read_manifest(path)


def test_slicer_console_loop_appends_the_same_manifest_rows(model, tmp_path):
    """The README's Slicer console loop over a scene, run on real MRML nodes from slicer-core."""
    slicer = pytest.importorskip("slicer")
    from MRISuperResLib.slicer.panel import EnhanceLogic

    scene = slicer.vtkMRMLScene()
    rng = np.random.default_rng(0)
    for name in ("T1", "T2"):
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        slicer.util.updateVolumeFromArray(node, (100 + 100 * rng.random((10, 14, 12))).astype(np.float32))
    small = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "tiny")
    slicer.util.updateVolumeFromArray(small, np.ones((2, 2, 2), np.float32))
    logic = EnhanceLogic(scene)
    manifest = tmp_path / "scene.csv"
    # the loop of the README (slicer.util.getNodesByClass there; the scene's own query here)
    volumes = [scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
               for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
    for volume in volumes:
        if volume.GetAttribute("MRISuperRes.role") or volume.IsA("vtkMRMLLabelMapVolumeNode"):
            continue
        start = time.perf_counter()
        try:
            result = logic.enhance(volume, model=str(model), scale=2, device="cpu")
        except Exception as error:
            append_manifest_row(manifest, input=volume.GetName(), output=None, status="failed", error=error,
                                seconds=time.perf_counter() - start)
            continue
        append_manifest_row(manifest, input=volume.GetName(), output=result.srVolumeNode.GetName(), status="done",
                            summary=result.summary, seconds=time.perf_counter() - start)
    rows = read_manifest(manifest)
    assert [(r["input"], r["output"], r["status"]) for r in rows] == [
        ("T1", "T1_SR_x2", "done"), ("T2", "T2_SR_x2", "done"), ("tiny", "", "failed")]
    assert rows[0]["model_sha256"] == json.loads(json.dumps(rows[1]["model_sha256"])) and rows[0]["device"]
    assert "needs at least" in rows[2]["error"]


def test_terminal_shows_a_cohort_bar_above_the_scan_bar_and_warnings_name_their_file(model, tmp_path, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    scans = tmp_path / "scans"
    write_scan(scans / "a.nii.gz", seed=1)
    labels = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 5, (10, 14, 12)).astype(np.uint8))
    sitk.WriteImage(labels, str(scans / "b_labels.nrrd"))  # integer with few values: a label-map warning
    write_scan(scans / "c.nii.gz", seed=2)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code = cli.main(["enhance", str(scans), str(tmp_path / "out"), "--model", str(model), "--threads", "1"])
    monkeypatch.undo()
    assert code == 0
    shown = terminal.getvalue()
    assert "cohort: 0/3 scans" in shown and "cohort: 3/3 scans" in shown and "ETA 0:00:0" in shown
    assert "%|" in shown and "super-resolving" in shown and "c.nii.gz: " in shown  # the scan's own bar
    warnings = [line for line in shown.splitlines() if "mrisuperres: warning:" in line]
    assert len(warnings) == 1 and f"mrisuperres: warning: {scans / 'b_labels.nrrd'}: input b_labels.nrrd looks " \
        "like a label map" in warnings[0]
    assert "mrisuperres: cohort summary: 3 done, 0 skipped, 0 failed, 0 flagged (3 scans" in shown


def test_outputs_inside_the_input_tree_are_not_inputs(model, tmp_path, capsys):
    """An output folder inside the input tree (BIDS derivatives): a re-run does not enhance the results."""
    bids = tmp_path / "bids"
    write_scan(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz", seed=1)
    (bids / "sub-01" / "anat" / "sub-01_T1w.json").write_text('{"RepetitionTime": 2.3}\n')  # a BIDS sidecar
    out = bids / "derivatives" / "sr"
    for _ in range(2):
        code, _, err = run_main(capsys, "enhance", bids, out, "--recursive", "--model", model, "--quiet")
        assert code == 0, err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz")) == ["sub-01/anat/sub-01_T1w_sr.nii.gz"]


def test_a_manifest_that_cannot_take_rows_is_refused_before_any_work(model, tmp_path, capsys):
    scans = tmp_path / "scans"
    write_scan(scans / "a.nii.gz")
    write_scan(scans / "b.nii.gz", seed=1)
    other = tmp_path / "other.csv"
    other.write_text("name,size\nx,1\n")
    code, _, err = run_main(capsys, "enhance", scans, tmp_path / "out", "--model", model, "--manifest", other)
    assert code == cli.EXIT_ERROR and "other columns" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_shard_count_of_zero_names_n():
    with pytest.raises(InputError, match="N, the number of parts, must be at least 1"):
        parse_shard("1/0")
    with pytest.raises(InputError, match="I must be between 1 and N"):
        parse_shard("3/2")


@pytest.mark.parametrize("has_bfloat16", [True, False])
def test_the_record_holds_the_precision_that_runs_where_it_differs_from_auto(
        has_bfloat16: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from MRISuperResLib.cohort.run import job_options
    from MRISuperResLib.engine import device as device_module
    from MRISuperResLib.engine.checkpoint import load_model_file

    monkeypatch.setattr(device_module, "cpu_has_bfloat16", lambda: has_bfloat16)
    model = load_model_file(make_tiny_model(tmp_path / "tiny.safetensors"))
    records = {precision: job_options(model, (2.0, 2.0, 2.0), {"device": "cpu", "precision": precision})
               for precision in ("auto", "float32", "bfloat16")}
    assert "precision" not in records["auto"] and records["float32"] == records["auto"]  # the same voxels
    assert records["bfloat16"] == ({**records["auto"], "precision": "bfloat16"} if has_bfloat16 else records["auto"])

