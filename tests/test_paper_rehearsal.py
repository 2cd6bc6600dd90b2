"""The paper's path as README's "Reproduce the paper" gives it: `presets/paper.yaml`, then `dvc repro`, in a copy of
the pipeline, on miniature inputs in every real format the preset reads (focusclip.testing: the MPII archives from a
local server, the released captions' folder, each evaluation set in its official layout), at CPU size
(tests/paper_rehearsal.yaml)."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
import yaml
from conftest import ROOT

from focusclip.pipeline import apply_preset
from focusclip.report import NAMES, PAPER_TABLE
from focusclip.testing import RangeFileServer, make_evalsets, make_mpii_archives, make_pose_captions

PIPELINE = ("dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore", ".gitignore", "stages", "presets", "focusclip")
POSED_IMAGES = dict(train=["000000001.jpg"], validation=["000000002.jpg"])  # the miniature MPII's images with annotated joints


def copy_pipeline(work: Path):
    "What `dvc repro` reads of a fresh clone: the pipeline, its params, stage notebooks, presets and the code its stages depend on."
    for name in PIPELINE:
        src, dst = ROOT / name, work / name
        if src.is_dir(): shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else: dst.parent.mkdir(parents=True, exist_ok=True); shutil.copy(src, dst)


def run(work: Path, *cmd) -> str:
    "A command in the copy, offline, with this interpreter's environment first on PATH (its papermill and dvc)."
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DVC_NO_ANALYTICS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}"
    return r.stdout


def write_inputs(work: Path, paper: dict):
    "The captions and evaluation sets where the paper preset reads them; the evaluation sets' folders are the preset's."
    make_pose_captions(work / "data/captions", **POSED_IMAGES)
    paths, options = make_evalsets(work / "data/eval")
    rel = lambda v: os.path.relpath(v, work)
    assert {k: rel(v) for k, v in paths.items()} == paper["evaluate"]["paths"]
    assert {k: {o: rel(v) for o, v in opts.items()} for k, opts in options.items()} == paper["evaluate"]["options"]


@pytest.mark.slow
def test_paper_preset_then_dvc_repro(tmp_path):
    work = tmp_path / "repo"; copy_pipeline(work)
    run(work, "git", "init", "-q")  # a clone: dvclive reads the commit it logs against
    run(work, "git", "add", "-A"); run(work, "git", "-c", "user.name=rehearsal", "-c", "user.email=rehearsal@localhost", "commit", "-qm", "clone")
    paper = apply_preset(work / "presets/paper.yaml", work / "params.yaml")
    write_inputs(work, paper)
    with RangeFileServer(make_mpii_archives(tmp_path / "mirror")) as srv:
        small = yaml.safe_load((ROOT / "tests/paper_rehearsal.yaml").read_text())
        small["data"]["mpii"]["mirror"] = srv.url
        (work / "rehearsal.yaml").write_text(yaml.safe_dump(small))
        apply_preset(work / "rehearsal.yaml", work / "params.yaml")
        run(work, sys.executable, "-m", "dvc", "repro")
    assert sorted(p for p, _, _ in srv.requests) == ["/mpii_human_pose_v1.tar.gz", "/mpii_human_pose_v1_u12_2.zip"]

    stages = run(work, sys.executable, "-m", "dvc", "stage", "list", "--name-only").split()
    assert set(yaml.safe_load((work / "dvc.lock").read_text())["stages"]) == set(stages)
    assert {"train@focusclip-42", "evaluate@clip-42", "evaluate_pretrained", "report"} <= set(stages)

    report = (work / "results/report.md").read_text()
    for task, dataset, *_ in PAPER_TABLE:
        assert f"| {task} | {NAMES[dataset]} |" in report, (task, dataset)
    for task in ("activity", "age", "emotion"): assert f"| {task} | **mean** (rule: paper) |" in report, task
    assert "| **all** | **headline: mean of task means** (rule: paper) |" in report
    assert json.loads((work / "results/metrics/report.json").read_text())["rule"] == "paper"

    again = run(work, sys.executable, "-m", "dvc", "repro")  # the server is gone: a stage that reran would fail
    assert "Running stage" not in again and "up to date" in again, again
