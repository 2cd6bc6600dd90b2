"""Evaluation-set readers on the real samples beside the project (skipped when ../shared is absent),
and the readers' errors on broken input."""
import warnings
from pathlib import Path
import numpy as np
import pytest
from focusclip.evaldata import read_utkface, read_facial_expressions, load_eval_sets, read_fer2013
from focusclip.evalsets import synthetic_tasks, normalize_label, AGE_BINS
from focusclip.data import load_rgb


def test_utkface_real_sample(shared):
    "200 aligned faces; the `life` bins give the 40 per age group that the sample's source describes."
    es = read_utkface(shared / "utkface")
    assert len(es) == 200 and es.split == "all"
    assert es.counts() == {"child": 40, "teenager": 40, "adult": 40, "middle-aged": 40, "elderly": 40}
    assert read_utkface(shared / "utkface", "race").counts() == {"white": 124, "black": 9, "asian": 22, "indian": 22, "others": 23}
    assert read_utkface(shared / "utkface", bins="paper_utkface").counts() == {"baby": 23, "child": 14, "teenager": 43, "young adult": 20, "adult": 100}
    x = load_rgb(es.items[0], 64)
    assert x.shape == (64, 64, 3) and x.dtype == np.uint8 and x.std() > 2


def test_emotions_real_sample(shared):
    "104 faces (105 lines with the header), mixed-case labels normalised into 8 classes."
    es = read_facial_expressions(shared / "emotions")
    assert len(es) == 104
    assert es.counts() == {"angry": 15, "disgusted": 15, "fearful": 10, "happy": 15, "sad": 15, "surprised": 15,
                           "neutral": 15, "contemptuous": 4}
    raw = [l.split(",")[2].strip() for l in (shared / "emotions/legend.csv").read_text().splitlines()[1:]]
    assert {"ANGER", "anger"} <= set(raw)  # the pitfall is really there
    assert [normalize_label(r, "emotion") for r in raw] == [es.classnames[l] for l in es.labels]
    sets = load_eval_sets(["facial_expressions", "utkface"], {"facial_expressions": shared / "emotions", "utkface": shared / "utkface"})
    assert [s.key for s in sets] == ["emotion/facial_expressions", "age/utkface"]


def test_age_bins_cover_all_ages():
    for name, bins in AGE_BINS.items():
        lows = [lo for lo, _, _ in bins]; highs = [hi for _, hi, _ in bins]
        assert lows[0] == 0 and highs[-1] == float("inf"), name
        assert all(h + 1 == l for h, l in zip(highs, lows[1:])), name


def test_missing_image_named(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "legend.csv").write_text("user.id,image,emotion\n1,gone.jpg,happiness\n")
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        read_facial_expressions(tmp_path)


def test_fer2013_bad_pixels_named(tmp_path):
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n3,1 2 3,PrivateTest\n")
    with pytest.raises(ValueError, match=r"fer2013.csv:2: pixels has 3 values"):
        read_fer2013(tmp_path / "fer2013.csv")


def test_synthetic_unknown_activity_named(tmp_path):
    "A record whose activity is not one of the generator's classes: an error naming the file and the item."
    from focusclip.data import Record, write_jsonl
    write_jsonl([Record(id="a", image="a.png", width=8, height=8, split="test", activity="juggling",
                        labels={"age": "adult", "emotion": "happy"})], tmp_path / "records.jsonl")
    with pytest.raises(ValueError, match=r"records.jsonl: item 0 .*a.png.* label 'juggling'"):
        synthetic_tasks(tmp_path / "records.jsonl", tasks=["activity"])
    with pytest.raises(ValueError, match="record 'a' has no activity label"):
        write_jsonl([Record(id="a", image="a.png", width=8, height=8, split="test", activity="")], tmp_path / "records.jsonl")
        synthetic_tasks(tmp_path / "records.jsonl", tasks=["activity"])
