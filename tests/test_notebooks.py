"""Every notebook under nbs/ is its module's documentation and its tests: run each one, one test each."""
import os, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT

NBS = sorted((ROOT / "nbs").glob("*.ipynb"))


@pytest.mark.parametrize("nb", NBS, ids=[p.stem for p in NBS])
def test_notebook(nb: Path):
    "Run the notebook's cells as nbdev-test does (cwd = nbs/, IN_TEST=1); cells flagged `slow` run only with FOCUSCLIP_SLOW=1."
    from nbdev.test import test_nb
    os.environ["IN_TEST"] = "1"
    cwd = os.getcwd(); os.chdir(nb.parent)
    try:
        flags = [] if os.environ.get("FOCUSCLIP_SLOW") == "1" else ["slow"]
        ok, secs = test_nb(str(nb), skip_flags=flags, showerr=True)
    finally: os.chdir(cwd)
    assert ok, f"{nb.name} failed (see the traceback above)"


def test_export_in_sync(tmp_path):
    "`nbdev-export` on the notebooks reproduces the committed package exactly (the package is never edited by hand)."
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "nbs", work / "nbs")
    shutil.copytree(ROOT / "focusclip", work / "focusclip", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
    before = {p.relative_to(work): p.read_text() for p in (work / "focusclip").rglob("*.py")}
    subprocess.run([sys.executable, "-c", "from nbdev.doclinks import nbdev_export; nbdev_export()"], cwd=work, check=True)
    after = {p.relative_to(work): p.read_text() for p in (work / "focusclip").rglob("*.py")}
    changed = sorted(str(k) for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"notebooks and package out of sync; run nbdev-export: {changed}"
