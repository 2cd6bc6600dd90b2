"""The embedded synthetic dataset: determinism (serial and parallel), counts, layout, parameter errors; the speed benchmark's completeness check."""
import hashlib, json, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from conftest import ROOT

from focusclip.data import read_jsonl, image_path, face_visible
from focusclip.people import ACTIVITIES, AGE_GROUPS, EMOTIONS
from focusclip.synth import SPLITS, generate, render_sample


def _digests(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_serial_and_parallel(tmp_path):
    # 96 images trigger the process pool with 2 workers; the serial run must give the same bytes
    a = generate(tmp_path / "a", 48, 12, 36, seed=7, workers=1, progress=False)
    b = generate(tmp_path / "b", 48, 12, 36, seed=7, workers=2, progress=False)
    assert a == b
    da, db = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert len(da) == 96 + 2  # images + records.jsonl + synth.json
    assert da == db
    generate(tmp_path / "c", 48, 12, 36, seed=8, workers=1, progress=False)
    dc = _digests(tmp_path / "c")
    assert sum(da[k] != dc[k] for k in da if k.startswith("images/")) == 96  # another seed: other images


def test_counts_layout_and_labels(tmp_path):
    recs = generate(tmp_path, 36, 12, 24, image_size=64, workers=1, progress=False)
    assert [sum(r.split == s for r in recs) for s in SPLITS] == [36, 12, 24]
    back = read_jsonl(tmp_path / "records.jsonl")
    assert back == recs and len({r.id for r in back}) == 72
    for r in back:
        assert r.image == f"images/{r.id}.png" and (r.width, r.height) == (64, 64)
        assert Image.open(image_path(r, tmp_path)).size == (64, 64)
        assert r.activity in ACTIVITIES and r.labels["age"] in AGE_GROUPS and r.labels["emotion"] in EMOTIONS
        assert len(r.people) == 1  # bystanders are drawn but not annotated
        p = r.people[0]; a, v = p.array, np.asarray(p.visible)
        assert ((a[v == 1] >= 0) & (a[v == 1] < 64)).all()
        assert 0 < p.scale < 64 / 200 * (2.4 if face_visible(r) else 1)  # a close-up's subject is taller than the frame
    # every activity equally often in each split (sizes are multiples of 12)
    for s in SPLITS:
        counts = [sum(r.split == s and r.activity == act for r in recs) for act in ACTIVITIES]
        assert len(set(counts)) == 1, (s, counts)
    assert json.loads((tmp_path / "synth.json").read_text())["image_size"] == 64


def test_resume_keeps_and_redraws(tmp_path):
    generate(tmp_path, 12, 0, 12, workers=1, progress=False)
    img = tmp_path / "images" / "synth_test_000004.png"
    before = img.read_bytes()
    img.unlink()  # an interrupted run: one image missing
    (tmp_path / "images" / "synth_train_000001.png").write_bytes(b"kept as is on resume")
    generate(tmp_path, 12, 0, 12, workers=1, progress=False)
    assert img.read_bytes() == before
    assert (tmp_path / "images" / "synth_train_000001.png").read_bytes() == b"kept as is on resume"
    # other settings: everything is redrawn
    generate(tmp_path, 12, 0, 12, seed=3, workers=1, progress=False)
    assert (tmp_path / "images" / "synth_train_000001.png").read_bytes()[:4] == b"\x89PNG"


def test_render_sample_matches_generate(tmp_path):
    recs = generate(tmp_path, 3, 0, 0, workers=1, progress=False)
    im, rec = render_sample(2, "train")
    assert rec == recs[2]
    assert np.array_equal(np.asarray(im), np.asarray(Image.open(image_path(recs[2], tmp_path))))


@pytest.mark.parametrize("kw, msg", [
    (dict(n_train=-1), "n_train must be a non-negative integer"),
    (dict(n_val=2.5), "n_val must be a non-negative integer"),
    (dict(image_size=8), "image_size must be an integer in [32, 1024]"),
    (dict(workers=0), "workers must be at least 1"),
    (dict(p_offframe=-0.1), "p_offframe must be a probability"),
    (dict(n_train=0, n_val=0, n_test=0), "nothing to generate"),
])
def test_bad_params(tmp_path, kw, msg):
    with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        generate(tmp_path, **{**dict(n_train=4, n_val=0, n_test=0, progress=False), **kw})
    assert not (tmp_path / "records.jsonl").exists()


def test_out_dir_is_a_file(tmp_path):
    f = tmp_path / "records"; f.write_text("x")
    with pytest.raises(NotADirectoryError, match="records: exists and is not a folder"):
        generate(f, 4, 0, 0, progress=False)


def test_speed_benchmark_runs():
    "benchmarks/synth.py on a small run: every image and record there, and its last line (the figure is the benchmark's to judge)."
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/synth.py"), "--n-train", "12", "--n-val", "0", "--n-test", "12"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "24 images wanted: 24 records, 24 image files (all there)" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("synth seconds (CPU / workers): ")
