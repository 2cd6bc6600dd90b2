"The embedded benchmark: packaged pretrained towers, no shared batch statistics, cached frozen parts, generator knobs, paired intervals."
from pathlib import Path
import numpy as np
import pytest
import torch
from focusclip.config import ParamsError
from focusclip.data import face_visible, head_fraction, open_rgb
from focusclip import synth

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def small():
    from focusclip.model import create_model
    torch.manual_seed(0)
    return create_model("small", unlocked_image_groups=1, freeze_bn=True, lock_text=True, learn_alpha=False, image_size=64)


def test_small_loads_the_packaged_imagenet_weights(small):
    import timm
    from focusclip.towers import packaged_image_weights
    sd = torch.load(packaged_image_weights("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    first = next(iter(sd.values()))
    torch.testing.assert_close(small.clip.visual.trunk.conv_stem.weight, first)  # mapped by position, strictly
    rand = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(rand(small.preprocess(x)), small.clip.visual.trunk.eval()(small.preprocess(x)), atol=1e-3)


@pytest.mark.skipif(not (SHARED / "coco").exists(), reason="../shared/data is absent")
def test_small_sees_a_skier_as_ski():
    "The trunk with the package's classifier tensors gives ImageNet classes: the COCO skiing frame -> 'ski' (795)."
    from focusclip.model import create_model
    from focusclip.towers import packaged_image_weights
    m = create_model("small", image_size=224).eval()
    sd = torch.load(packaged_image_weights("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    W, b = list(sd.values())[-2:]
    best = {}
    for f in sorted((SHARED / "coco").glob("*.jpg")):
        im = open_rgb(f).resize((224, 224))
        x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad(): logits = m.clip.visual.trunk(m.preprocess(x)) @ W.T + b
        best[f.name] = logits.topk(5).indices[0].tolist()
    assert any(795 in top for top in best.values()), best


def test_frozen_batch_norm_keeps_views_apart(small):
    "With freeze_bn, a plain image's features do not depend on what else is in the batch, and running statistics stay."
    m = small.train()
    x, h = torch.rand(3, 3, 64, 64), torch.rand(3, 64, 64)
    stats = [b.running_mean.clone() for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        alone = m.clip.encode_image(m.preprocess(x), normalize=True)
        both = m.clip.encode_image(m.preprocess(torch.cat([x, m.highlight(x, h)])), normalize=True)[:3]
    torch.testing.assert_close(alone, both, atol=1e-5, rtol=1e-5)
    after = [b.running_mean for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(stats, after))
    assert all(not b.training for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)) and m.training


def test_cached_step_equals_whole_tower_step(small):
    "The loss of a step from cached activations is the loss of the same step through the whole towers."
    from focusclip.losses import FocusCLIPLoss
    m = small.train(); n = m.frozen_prefix()
    assert not m.clip.text.transformer.training  # the frozen text tower runs without dropout
    m.eval()  # the trainable head's dropout aside, the two paths are the same function
    x, h = torch.rand(4, 3, 64, 64), torch.rand(4, 64, 64)
    tok = m.tokenize(["a person waving", "a person sitting", "a child running", "an elderly person walking"])
    loss = FocusCLIPLoss("ntxent", 0.5, use_heatmap=True)
    whole = loss(m(x, tok, h))["loss"]
    cached = dict(prefix=n, image=m.encode_prefix(x, n), highlighted=m.encode_prefix(m.highlight(x, h), n), text=m.encode_text_pooled(tok))
    fast = loss(m(None, None, None, cached=cached))["loss"]
    torch.testing.assert_close(fast, whole, atol=1e-4, rtol=1e-4)
    m.train(); fast = loss(m(None, None, None, cached=cached))["loss"]; fast.backward()
    assert m.clip.visual.trunk.conv_head.weight.grad is not None and m.clip.visual.trunk.conv_stem.weight.grad is None


def test_style_shift_and_closeups():
    same = synth.sample_scene(5, "test", shift=0.0); full = synth.sample_scene(5, "test", shift=1.0)
    assert (same["shift"], same["style"], full["shift"], full["style"]) == (0.0, "scene", 1.0, "pattern")
    assert synth.sample_scene(5, "train", shift=1.0)["shift"] == 0.0  # the training splits are always the training style
    a, b, c = (np.asarray(synth.draw_scene(synth.sample_scene(5, "test", shift=s)), dtype=float) for s in (0.0, 0.5, 1.0))
    assert np.abs(a - c).mean() > np.abs(a - b).mean() > 1.0  # the shift moves the image further the larger it is
    closeups = [synth.render_sample(i, "train", image_size=64, p_closeup=1.0)[1] for i in range(12)]
    fulls = [synth.render_sample(i, "train", image_size=64, p_closeup=0.0)[1] for i in range(12)]
    assert all(face_visible(r) for r in closeups) and not any(face_visible(r) for r in fulls)
    assert min(head_fraction(r) for r in closeups) > max(head_fraction(r) for r in fulls)


def test_generator_settings_are_checked(tmp_path):
    with pytest.raises(ParamsError, match=r"params.yaml:data.synthetic: unknown key\(s\) \['n_trian'\]"):
        synth.generate_from_params({"n_trian": 5}, tmp_path)
    with pytest.raises(ParamsError, match=r"data.synthetic.shift: expected float"):
        synth.generate_from_params({"shift": "far"}, tmp_path)
    with pytest.raises(ValueError, match=r"subject_size must be \[low, high\]"):
        synth.generate_from_params({"n_train": 2, "n_val": 0, "n_test": 0, "subject_size": [0.9, 0.5]}, tmp_path)
    recs = synth.generate_from_params({"n_train": 2, "n_val": 0, "n_test": 2, "image_size": 48, "workers": 1}, tmp_path, progress=False)
    assert len(recs) == 4 and recs[0].width == 48


def test_describer_appearance_option():
    from focusclip.prompts import describe_rules
    close = next(r for i in range(40) for r in [synth.render_sample(i, "train", image_size=64, p_closeup=1.0)[1]])
    far = synth.render_sample(0, "train", image_size=64, p_closeup=0.0)[1]
    emo = lambda r: r.labels["emotion"]
    assert emo(close) in describe_rules(close) and "face" in describe_rules(close).lower()
    assert f"looks {emo(far)}" not in describe_rules(far)  # a face too small to read: no expression sentence
    off = describe_rules(close, appearance=False)
    assert emo(close) not in off and close.labels["age"] not in off


def _doc(variant, seed, correct):
    keys = ["activity/synthetic", "age/synthetic", "emotion/synthetic"]
    return {"variant": variant, "seed": seed, "results": [
        {"key": k, "task": k.split("/")[0], "dataset": "synthetic", "correct_topk": "".join("1" if c else "0" for c in correct)} for k in keys]}


def test_paired_difference_interval():
    from focusclip.metrics import paired_difference
    keys = ["activity/synthetic", "age/synthetic", "emotion/synthetic"]
    rng = np.random.default_rng(0)
    base = {s: rng.random(200) < 0.4 for s in (1, 2, 3)}
    better = {s: base[s] | (rng.random(200) < 0.2) for s in base}  # every item the baseline gets, plus more
    docs = [_doc("clip", s, base[s]) for s in base] + [_doc("focusclip", s, better[s]) for s in base]
    r = paired_difference(docs, keys, n_boot=500)
    expect = np.mean([100 * (better[s].mean() - base[s].mean()) for s in base])
    assert abs(r["diff"] - expect) < 1e-9 and r["diff_ci95"][0] > 0 and r["significant"] and r["seeds"] == [1, 2, 3]
    same = paired_difference([_doc("clip", s, base[s]) for s in base] + [_doc("focusclip", s, base[s]) for s in base], keys, n_boot=200)
    assert same["diff"] == 0 and same["diff_ci95"] == [0.0, 0.0] and not same["significant"]


def test_linear_probe_reads_what_the_features_carry():
    from focusclip.evaluate import fit_probe, probe_accuracy
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    centres = rng.normal(0, 1, (3, 16)) * 4
    x = centres[y] + rng.normal(0, 1, (300, 16))
    clf = fit_probe(x[:200], y[:200])
    top1, top2 = probe_accuracy(clf, x[200:], y[200:], k=2, n_classes=3)
    assert top1 > 95 and top2 >= top1
    noise = fit_probe(rng.normal(0, 1, (200, 16)), y[:200])
    assert probe_accuracy(noise, rng.normal(0, 1, (100, 16)), y[200:], n_classes=3)[0] < 50  # chance is 33
