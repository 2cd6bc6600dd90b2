"""The controlled study (focusclip.study): a tiny point end to end (its fields, a rerun doing nothing, the store's feature cache against the features stage's), resuming after an interruption."""
import json
from pathlib import Path
import pytest
import torch
import yaml

from conftest import ROOT
from focusclip import study as S

ROWS_FIELDS = {"point", "knob", "value", "synthetic", "seed", "fingerprint", "study_version", "headline", "seconds", "evals"}


def _tiny_study(tmp: Path, seeds=(1,), points=None, keep_work=False) -> Path:
    "A study of tiny points on a copy of the project's params: the default model at 64 px, a few images, one epoch, one prompt per task."
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["model"]["image_size"] = p["heatmaps"]["size"] = 64
    p["evaluate"]["templates"] = {k: v[:1] for k, v in p["evaluate"]["templates"].items()}
    (tmp / "base.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    st = dict(base_params="base.yaml", seeds=list(seeds), results_dir="results", keep_work=keep_work,
              synthetic=dict(n_train=12, n_val=0, n_test=24, image_size=64, workers=1),
              train=dict(epochs=1, batch_size=6, warmup_steps=1),
              knobs=dict(context_p=dict(title="context", neutral=0.0)),
              points=points or {"neutral": dict(knob=None, value=None, synthetic={})})
    (tmp / "study.yaml").write_text(yaml.safe_dump(st, sort_keys=False))
    return tmp / "study.yaml"


def test_tiny_point_end_to_end(tmp_path, monkeypatch):
    path = _tiny_study(tmp_path, keep_work=True)
    docs = S.run_point(path, "neutral", log=lambda m: None)
    doc = json.loads((tmp_path / "results/points/neutral/seed_1.json").read_text())
    assert docs == [doc] and ROWS_FIELDS <= set(doc)
    assert set(doc["evals"]) == set(S.ROWS) and set(doc["headline"]) == set(S.ROWS)
    for row, e in doc["evals"].items():
        keys = [r["key"] for r in e["results"]]
        assert keys == list(S.HEADLINE_KEYS) and e["variant"] == row and e["seed"] == 1
        assert all(len(r["correct_topk"]) == r["n"] for r in e["results"])  # per item: the paired bootstrap's input
    # the oracle and CLIP are scored on the same items (same records), and so is every view shown to CLIP and FocusCLIP
    n = lambda row: [r["n"] for r in doc["evals"][row]["results"]]
    assert n("oracle") == n("clip") == n("focusclip")
    shown = {f"{v}/{s}" for s, e in yaml.safe_load((tmp_path / "base.yaml").read_text())["views"]["sources"].items() for v in e["views"]}
    for row in ("clip", "focusclip"):
        assert set(doc["evals"][row]["views"]) == shown and doc["evals"]["oracle"]["views"] == {}
        assert all([r["n"] for r in rs] == n(row) and len(rs[0]["correct_topk"]) == rs[0]["n"] for rs in doc["evals"][row]["views"].values())
    assert doc["subject"]["splits"]["test"]["n"] > 0  # the point's own predicted heatmaps, scored
    assert not list((tmp_path / "work/neutral").rglob("*.safetensors"))  # models removed once evaluated
    assert any((tmp_path / "work/_store").rglob("*.json"))
    summary = S.point_summary([doc], n_boot=50)
    assert set(summary["diffs"]) == {f"{m}-{b}" for m, b in S.DIFFS}
    # a second run does nothing
    calls = []
    monkeypatch.setattr(S, "prepare_point", lambda *a, **k: calls.append("prepare"))
    monkeypatch.setattr(S, "run_seed", lambda *a, **k: calls.append("seed"))
    assert S.run_point(path, "neutral", log=lambda m: None) == [doc] and calls == []
    # the feature cache assembled from the store is the features stage's file (same activations, texts, layout)
    from focusclip.features import run_features
    work = tmp_path / "work/neutral"; main = yaml.safe_load((work / "params.yaml").read_text())
    ours = torch.load(main["train"]["features"], weights_only=False)
    ref_path = tmp_path / "ref.pt"; S._write_params(dict(main, train=dict(main["train"], features=str(ref_path))), tmp_path / "ref.yaml")
    run_features(tmp_path / "ref.yaml", progress=False)
    ref = torch.load(ref_path, weights_only=False)
    assert sorted(ours) == sorted(ref) and ours["ids"] == ref["ids"] and ours["texts"] == ref["texts"] and ours["prefix"] > 0
    for k in ("version", "prefix", "image_size", "prefix_hash", "alpha", "text_hash"): assert ours[k] == ref[k], k
    for k in ref["images"]: torch.testing.assert_close(ours["images"][k].float(), ref["images"][k].float(), atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(ours["text_pooled"], ref["text_pooled"], atol=1e-5, rtol=1e-5)
    logs = []
    S.point_features(main, tmp_path / "work/_store", log=logs.append)  # a point with the same images and texts: all from the store
    assert all(f"{k} {n}/{n}" in logs[0] for k, n in (("train", 12), ("train highlighted", 12), ("test", 24), ("texts", len(ref["texts"]))))


def _fake_seed(work, seed, store_dir, log=print):
    e = lambda row: {"variant": row, "seed": seed, "results": [dict(key=k, task=k.split("/")[0], n=2, topk=50.0, correct_topk="10")
                                                               for k in S.HEADLINE_KEYS]}
    return {r: e(r) for r in S.ROWS}, {"train_clip": 0.0}


def test_interrupted_point_resumes_with_the_unfinished_seeds(tmp_path, monkeypatch):
    path = _tiny_study(tmp_path, seeds=(1, 2, 3))
    ran = []
    def prepare(*a, **k): return {"data": 0.0}
    def interrupted(work, seed, store_dir, log=print):
        if seed == 2: raise KeyboardInterrupt  # the sweep is stopped during seed 2
        ran.append(seed); return _fake_seed(work, seed, store_dir)
    monkeypatch.setattr(S, "prepare_point", prepare); monkeypatch.setattr(S, "run_seed", interrupted)
    with pytest.raises(KeyboardInterrupt): S.run_point(path, "neutral", log=lambda m: None)
    assert ran == [1] and sorted(p.name for p in (tmp_path / "results/points/neutral").iterdir()) == ["seed_1.json"]
    monkeypatch.setattr(S, "run_seed", lambda work, seed, store_dir, log=print: ran.append(seed) or _fake_seed(work, seed, store_dir))
    docs = S.run_point(path, "neutral", log=lambda m: None)
    assert ran == [1, 2, 3] and [d["seed"] for d in docs] == [1, 2, 3]  # seed 1 was not run again
    # another knob value (or other code) changes the fingerprint: every seed runs again
    st = yaml.safe_load(path.read_text()); st["synthetic"]["n_test"] = 36; path.write_text(yaml.safe_dump(st))
    S.run_point(path, "neutral", log=lambda m: None)
    assert ran == [1, 2, 3, 1, 2, 3]
