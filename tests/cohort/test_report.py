"""The cohort review page (``mrisuperres report``), checked in a real headless Chromium.

Requirement under test: one self-contained HTML page (no external assets; thumbnails embedded as PNG), one row
per scan with an input / SR / difference strip, its scores and links to the files, flagged scans first. The
browser test needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; it skips without.
"""

from __future__ import annotations

import base64
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from helpers import make_tiny_model
from MRISuperResLib.cli import app as cli
from MRISuperResLib.cohort.manifest import read_manifest
from MRISuperResLib.cohort.report import order_rows, render_report
from helpers import run_main, write_scan

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1200,900")


@pytest.fixture()
def cohort(tmp_path: Path, capsys: pytest.CaptureFixture) -> dict[str, Path]:
    """Three scans enhanced by a tiny random model whose calibrated consistency threshold (0.085) sits between the
    NRMSE of smooth volumes (about 0.07) and of a sharper one (about 0.10, 1.4 x B-spline's on the same input, so
    the result, not the input, is to blame): ``b_sharp`` is flagged; plus a failed scan."""
    model = make_tiny_model(tmp_path / "tiny-x2.safetensors", extra={"consistency": {"threshold": 0.085}})
    scans = tmp_path / "scans"
    write_scan(scans / "a_smooth.nii.gz", seed=1)
    write_scan(scans / "b_sharp.nii.gz", seed=2, sigma=0.5)
    write_scan(scans / "c_smooth.nii.gz", seed=3)
    (scans / "d_broken.nii.gz").write_bytes(b"not a volume" * 20)
    manifest = tmp_path / "cohort.csv"
    code, _, err = run_main(capsys, "enhance", scans, tmp_path / "out", "--model", model, "--threads", "1",
                            "--companions", "--manifest", manifest, "--quiet")
    assert code == cli.EXIT_ERROR, err  # the broken scan
    assert "1 flagged" in err and f"flagged  {scans / 'b_sharp.nii.gz'}" in err
    return {"root": tmp_path, "manifest": manifest, "scans": scans}


def test_flagged_first_then_failed_and_self_contained(cohort):
    rows = {Path(r["input"]).name: r for r in read_manifest(cohort["manifest"])}
    assert rows["b_sharp.nii.gz"]["flagged"] is True
    assert rows["a_smooth.nii.gz"]["flagged"] is False and rows["d_broken.nii.gz"]["status"] == "failed"
    assert [Path(r["input"]).name for r in order_rows(list(rows.values()))] == [
        "b_sharp.nii.gz", "d_broken.nii.gz", "a_smooth.nii.gz", "c_smooth.nii.gz"]
    page = render_report([cohort["manifest"]], cohort["root"] / "review.html")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page refers to an external asset"
    assert "<script" not in page and "@import" not in page and "url(" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert 'href="out/b_sharp_sr.nii.gz"' in page and 'href="scans/b_sharp.nii.gz"' in page


def test_report_command_writes_once_and_refuses_bad_manifests(cohort, capsys):
    page = cohort["root"] / "review.html"
    code, out, err = run_main(capsys, "report", cohort["manifest"], "-o", page)
    assert code == 0, err
    assert out.strip() == str(page) and page.stat().st_size > 1000
    code, _, err = run_main(capsys, "report", cohort["manifest"], "-o", page)
    assert code == cli.EXIT_ERROR and "already exists" in err
    code, _, err = run_main(capsys, "report", cohort["scans"] / "missing.csv")
    assert code == cli.EXIT_ERROR and "does not exist" in err
    # the default page is the manifest's name with .html
    code, _, err = run_main(capsys, "report", cohort["manifest"], "--no-thumbnails")
    assert code == 0 and cohort["manifest"].with_suffix(".html").is_file()


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    return browser, driver


def test_report_renders_in_headless_chromium_with_the_flagged_scan_first(cohort, capsys):
    browser, driver_path = _chromium()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    page = cohort["root"] / "review.html"
    assert run_main(capsys, "report", cohort["manifest"], "-o", page)[0] == 0
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(page.as_uri())
        assert "MRISuperRes cohort review" in driver.title
        rows = driver.execute_script(
            "return Array.from(document.querySelectorAll('tr.scan')).map(r => ({input: r.dataset.input, "
            "status: r.dataset.status, flagged: r.dataset.flagged, text: r.innerText, "
            "images: Array.from(r.querySelectorAll('img')).map(i => [i.complete, i.naturalWidth, i.naturalHeight])}))")
        assert [Path(r["input"]).name for r in rows] == ["b_sharp.nii.gz", "d_broken.nii.gz", "a_smooth.nii.gz",
                                                        "c_smooth.nii.gz"]
        first = rows[0]
        assert first["flagged"] == "true" and "flagged" in first["text"] and "> 0.0850" in first["text"]
        # every finished scan shows a decoded thumbnail strip; the failed one its error
        for row in rows:
            if row["status"] == "failed":
                assert row["images"] == [] and "cannot read" in row["text"]
            else:
                assert len(row["images"]) == 1 and row["images"][0][0] and row["images"][0][1] > 300
        # the visible first row of the table is the flagged scan
        top = driver.execute_script("return document.querySelector('#scans tbody tr').getBoundingClientRect().top")
        assert top < 900
        counts = driver.find_element("id", "counts").text
        assert "4 scans" in counts and "1 flagged" in counts and "1 failed" in counts
        links = driver.execute_script("return Array.from(document.querySelectorAll('tr.scan a')).map(a => a.href)")
        assert any(link.endswith("/out/b_sharp_sr.nii.gz") and link.startswith("file://") for link in links)
        errors = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
        assert errors == [], errors
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
