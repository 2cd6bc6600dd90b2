"""The zero-shot harness with the real `tiny` FocusCLIP model: the text classifier against a direct
computation, determinism, the evaluate stage from a saved model folder, and clear errors."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from conftest import ROOT
from focusclip.model import create_model, save_model
from focusclip.evalsets import EvalSet
from focusclip.data import load_rgb
from focusclip.zeroshot import build_zero_shot_classifier, encode_images, evaluate_zero_shot, load_results
from focusclip.metrics import accuracy
from focusclip.evaluate import run_evaluate


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("tiny").eval()


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    "A small embedded dataset: 36 held-out images (3 per activity)."
    from focusclip.synth import generate
    d = tmp_path_factory.mktemp("synth")
    generate(d / "records", n_train=4, n_val=0, n_test=36, image_size=64, workers=1, progress=False)
    return d / "records" / "records.jsonl"


def test_classifier_is_the_mean_of_normalised_prompt_embeddings(model):
    classes, templates = ["running", "sitting on a chair"], ["a photo of a person {}", "someone {}", "{}"]
    W = build_zero_shot_classifier(model, classes, templates)
    with torch.no_grad():
        cols = []
        for c in classes:
            f = model.encode_text(model.tokenizer([t.format(c) for t in templates]), normalize=True)
            m = torch.nn.functional.normalize(f, dim=-1).mean(0)
            cols.append(m / m.norm())
    torch.testing.assert_close(W, torch.stack(cols, 1), atol=1e-5, rtol=1e-5)


def test_evaluate_matches_direct_computation(model, records):
    from focusclip.evalsets import synthetic_tasks
    es = synthetic_tasks(records, by_shot=False)[0]  # every image (by default activity is scored on full shots only)
    assert es.key == "activity/synthetic" and len(es) == 36 and len(es.classnames) == 12
    r = evaluate_zero_shot(model, es, bootstrap=200, progress=False, return_logits=True)
    W = build_zero_shot_classifier(model, es.classnames, r["templates"])
    x = torch.from_numpy(np.stack([load_rgb(p, model.image_size) for p in es.items])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad(): logits = model.encode_image(x) @ W
    np.testing.assert_allclose(r["logits"], logits.numpy(), atol=1e-4)
    a1, a3 = accuracy(logits, es.labels, (1, 3))
    assert (r["top1"], r["topk"]) == (round(100 * a1, 4), round(100 * a3, 4)) and r["k"] == 3
    assert r["chance_topk"] == 25.0 and r["top1"] <= r["topk"]
    assert r["topk_ci"][0] <= r["topk"] <= r["topk_ci"][1]
    assert sum(map(sum, r["confusion"])) == 36
    r2 = evaluate_zero_shot(model, es, bootstrap=200, progress=False)
    assert (r2["top1"], r2["topk_ci"], r2["embedding_2d"]) == (r["top1"], r["topk_ci"], r["embedding_2d"])


def test_batching_does_not_change_embeddings(model, records):
    from focusclip.evalsets import synthetic_tasks
    es = synthetic_tasks(records, tasks=["age"])[0]
    torch.testing.assert_close(encode_images(model, es, batch_size=5, progress=False),
                               encode_images(model, es, batch_size=64, progress=False), atol=1e-5, rtol=1e-5)


def test_corrupt_image_is_named(model, tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    Image.new("RGB", (10, 10)).save(good); bad.write_bytes(b"\x00" * 20)
    es = EvalSet("x", "age", ["child", "adult"], [good, bad], [0, 1])
    with pytest.raises(ValueError, match="bad.jpg: cannot read image"):
        evaluate_zero_shot(model, es, bootstrap=0, progress=False)


def test_run_evaluate_from_saved_model(model, records, tmp_path):
    save_model(model, tmp_path / "models/clip")
    params = tmp_path / "params.yaml"
    params.write_text(f"base: {{seed: 3, device: cpu}}\nevaluate:\n  records: {records}\n  bootstrap: 50\n  progress: false\n")
    out = run_evaluate(params, "clip", model_dir=tmp_path / "models/clip", out_path=tmp_path / "eval/clip_s3.json")
    doc = load_results(tmp_path / "eval/clip_s3.json")
    assert doc["variant"] == "clip" and doc["seed"] == 3
    assert [r["key"] for r in doc["results"]] == ["activity/synthetic", "age/synthetic", "emotion/synthetic"]
    assert [r["k"] for r in doc["results"]] == [3, 1, 3] and [r["n_classes"] for r in doc["results"]] == [12, 3, 5]
    direct = evaluate_zero_shot(model, __import__("focusclip.evalsets", fromlist=["x"]).synthetic_tasks(records)[1], bootstrap=50, seed=3, progress=False)
    assert doc["results"][1]["top1"] == direct["top1"]  # the saved and reloaded model gives the same numbers
    assert (tmp_path / "eval/clip_s3.csv").read_text().splitlines()[1].startswith("clip,3,synthetic,activity")
    with pytest.raises(FileNotFoundError, match="no trained model"):
        run_evaluate(params, "focusclip", model_dir=tmp_path / "models/none", out_path=tmp_path / "eval/x.json")
    params.write_text("evaluate:\n  datasets: [stanford40]\n")
    with pytest.raises(ValueError, match=r"evaluate.paths.stanford40: no path given"):
        run_evaluate(params, "clip", model=model, out_path=tmp_path / "eval/y.json")


@pytest.mark.slow
def test_benchmark_prints_images_per_second():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/zeroshot.py"), "--n", "64", "--repeats", "1", "--bootstrap", "100"],
                         capture_output=True, text=True, env=env, timeout=300, check=True).stdout.strip().splitlines()
    assert out[-1].startswith("zeroshot images/s: ") and float(out[-1].split(": ")[1]) > 0
