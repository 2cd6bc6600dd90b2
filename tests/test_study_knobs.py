"""The controlled study's generator knobs: neutral values draw the default dataset byte for byte; each knob changes the images the way it says."""
import hashlib, json
from pathlib import Path
import numpy as np
import pytest
from PIL import Image

from focusclip.data import read_jsonl
from focusclip import synth
from focusclip import people
from focusclip.people import ACTIVITIES, BODIES
from focusclip.synth import CONTEXTS, KNOBS, PLAIN, SYNTH_DEFAULTS, draw_scene, generate, sample_scene

# sha256 of `generate(tmp, n_train=6, n_val=3, n_test=6, workers=1)`, recorded before the knobs existed
DEFAULT_DIGESTS = {
    "images/synth_test_000000.png": "bef6bc63acb31caa91c59900f99d913ee78447e98c7c81aceb6d2e163b9d8386",
    "images/synth_test_000001.png": "1473198cca70a40604df1943ff2ad7ea9f83063520b710f543ccc0c76dec1251",
    "images/synth_test_000002.png": "ffcf979fb38fb0528cc6e69901b3dd7d5adf6b3278b6705b56b92eb77b903d3b",
    "images/synth_test_000003.png": "aacdc3b1143d97e0bd26bc89ef27c56898ac54c1f98c542ab5ac8e60f6987261",
    "images/synth_test_000004.png": "fafadb502303e73ff98f9eed0f4cefebadb6216228be0653c06637d182d4525e",
    "images/synth_test_000005.png": "7abdfcf6d5e2caddd73295ae5b0050a9e36d9ec0cb9f2a17fd208677d0dd4331",
    "images/synth_train_000000.png": "2181efca9e19b647253ef144952b768a9894683e07bbcf4854e06ceea01ced6a",
    "images/synth_train_000001.png": "24090cf24344a3763928cedadf96f5f1c80a756e163fe80218384978eade8edd",
    "images/synth_train_000002.png": "e1e51299f5fbecf37a962dcc90685af0fc8a162e161248e0f6d28f49a7737b32",
    "images/synth_train_000003.png": "7c5c927f03c33c1e505bc915526efc8675ea6dd09a7d1c1d2fc13c2bb8de68e1",
    "images/synth_train_000004.png": "e2a3cb91be4881070c062606bba4eb7390d56b8a6c60eb99ace9edd051fb8ffd",
    "images/synth_train_000005.png": "0d40863081906900f77090133a405bbf0552a97ce60dbd40fdc424c5962935bd",
    "images/synth_val_000000.png": "35893598a9f973b57bafcbf0f4bbe6e515364adf13cd242ef5bcb57d30b17c1d",
    "images/synth_val_000001.png": "1adb6ac532a5a0e38c66035520e176ecdb531ba49de24a0907987a381847aa25",
    "images/synth_val_000002.png": "456f6521cb4304bddcecd7f095a867add706a320e8f0c074ea154e46aebf3093",
    "records.jsonl": "5b15408fec355980c6d799d499ff9dec7a1c8427298fe3f432199bd9925c636b",
    "synth.json": "d81110b504ac96b0620f7e1bf807f675ad0d690d5c92e8f107ce5371ede86917",
}
# one sha256 over every image and records.jsonl of `generate(tmp, 48, 0, 48, image_size=64, workers=1)` (all activities, props, occluders), recorded before the knobs
DEFAULT_DIGEST_64 = "ba9fd82284b0117fe67239efa36fd19698804a42c5905d0513159af5ddf2fd9f"
NEUTRAL = {k: SYNTH_DEFAULTS[k] for k in KNOBS}


def _digests(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _digest_all(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "synth.json": h.update(p.relative_to(folder).as_posix().encode()); h.update(p.read_bytes())
    return h.hexdigest()


def _px(im) -> np.ndarray: return np.asarray(im, dtype=np.int16)


def test_neutral_values_reproduce_the_default_dataset(tmp_path):
    assert NEUTRAL == dict(bystander_scale=[0.35, 0.8], bystander_opacity=[0.35, 0.65], bystander_activity="any",
                           context_p=0.0, context_test="random", keypoint_noise=0.0, subject_only=False)
    generate(tmp_path / "default", n_train=6, n_val=3, n_test=6, workers=1, progress=False)
    assert _digests(tmp_path / "default") == DEFAULT_DIGESTS
    generate(tmp_path / "explicit", n_train=6, n_val=3, n_test=6, workers=1, progress=False, **NEUTRAL)
    assert _digests(tmp_path / "explicit") == DEFAULT_DIGESTS  # the manifest too: a neutral run resumes a default one
    synth.generate_from_params({"n_train": 6, "n_val": 3, "n_test": 6, "workers": 1, **NEUTRAL}, tmp_path / "params", progress=False)
    assert _digests(tmp_path / "params") == DEFAULT_DIGESTS
    generate(tmp_path / "wide", 48, 0, 48, image_size=64, workers=1, progress=False, **NEUTRAL)
    assert _digest_all(tmp_path / "wide") == DEFAULT_DIGEST_64


def test_subject_only_keeps_the_subject_and_removes_everything_else(tmp_path, monkeypatch):
    a = generate(tmp_path / "a", 12, 0, 12, workers=1, progress=False)
    b = generate(tmp_path / "b", 12, 0, 12, workers=1, progress=False, subject_only=True)
    assert a == b  # same scenes: same labels, joints and visibility
    assert json.loads((tmp_path / "b" / "synth.json").read_text())["subject_only"] is True
    for r in a:
        full, only = _px(Image.open(tmp_path / "a" / r.image)), _px(Image.open(tmp_path / "b" / r.image))
        sc = sample_scene(int(r.id[-6:]), r.split, subject_only=True)
        with monkeypatch.context() as m:  # the subject's mask: pixels that do not depend on the plain background's colour
            m.setattr(synth, "PLAIN", (20, 200, 60)); other = _px(draw_scene(sc))
        covered, empty = (only == other).all(-1), (only == PLAIN).all(-1) & (other == (20, 200, 60)).all(-1)
        assert (covered | empty).mean() > 0.9 and covered.sum() > 50
        assert (full[empty] != PLAIN).any(-1).mean() > 0.9  # where the scene had its background, bystanders, shapes
        keep = covered.copy()
        if sc["occluder"] is not None:  # the occluder is drawn over the subject (a pixel's margin for the box filter)
            lo, hi = (np.asarray(v) / people.SS for v in sc["occluder"][:2])
            ys, xs = np.mgrid[:full.shape[0], :full.shape[1]]
            keep &= ~((xs >= lo[0] - 1) & (xs <= hi[0] + 1) & (ys >= lo[1] - 1) & (ys <= hi[1] + 1))
        assert (full[keep] == only[keep]).all()  # the subject is drawn exactly as in the scene


def test_bystander_opacity_scale_and_activity():
    scs = [sample_scene(i, "train", bystander_opacity=[0.0, 0.0]) for i in range(24)]
    with_by = [sc for sc in scs if sc["bystanders"]]
    assert len(with_by) > 10
    for sc in with_by:  # opacity 0: no bystander pixel at all
        assert np.array_equal(_px(draw_scene(sc)), _px(draw_scene(dict(sc, bystanders=[]))))
    vivid = sample_scene(with_by[0]["index"], "train", bystander_opacity=[1.0, 1.0])
    assert all(f == 0.0 for _, _, f in vivid["bystanders"])  # full colour
    assert not np.array_equal(_px(draw_scene(vivid)), _px(draw_scene(dict(vivid, bystanders=[]))))
    for lo, hi in ((1.0, 1.0), (0.9, 1.3)):
        for sc in (sample_scene(i, "train", bystander_scale=[lo, hi]) for i in range(24)):
            for fb, _, _ in sc["bystanders"]:
                r = fb["height"] / sc["subject"]["height"] * BODIES[sc["age"]]["size"] / BODIES[fb["age"]]["size"]
                assert lo - 1e-9 <= r <= hi + 1e-9
    acts = {mode: [(sc["activity"], fb["activity"]) for sc in (sample_scene(i, "train", max_bystanders=4, bystander_activity=mode) for i in range(96))
                   for fb, _, _ in sc["bystanders"]] for mode in ("any", "same", "other")}
    assert all(a == b for a, b in acts["same"]) and all(a != b for a, b in acts["other"])
    assert 0 < np.mean([a == b for a, b in acts["any"]]) < 0.2  # at random: about 1 in 12
    assert len({b for _, b in acts["other"]}) == len(ACTIVITIES)


def _sky_ground_shift(sc) -> tuple[np.ndarray, np.ndarray]:
    "How much the context changed the sky (top row) and the ground (bottom row, where the ground gradient is 0.8x) of the scene's background."
    n = sc["size"] * people.SS
    ctx, plain = (synth._background(sc["bg_seed"], 0.0, n, c).astype(float) for c in (sc["context"], None))
    ok = (ctx > 0) & (ctx < 255) & (plain > 0) & (plain < 255)  # not clipped
    med = lambda row: np.array([np.median((ctx - plain)[row, :, c][ok[row, :, c]]) for c in range(3)])
    return med(0), med(n - 1) / 0.8


def _expected_shift(sc) -> tuple[np.ndarray, np.ndarray]:
    st, rng = people.STYLES["scene"], np.random.default_rng([sc["bg_seed"], 0])
    si, gi = rng.integers(len(st["sky"])), rng.integers(len(st["ground"]))  # the random palette entries the context replaces
    cs, cg = CONTEXTS[sc["context"]]
    return np.subtract(st["sky"][cs], st["sky"][si]), np.subtract(st["ground"][cg], st["ground"][gi])


def test_context_shortcut_pairs_activities_with_backgrounds():
    for split in ("train", "val"):
        for i in range(24):
            sc, plain = sample_scene(i, split, context_p=1.0), sample_scene(i, split)
            a = ACTIVITIES.index(sc["activity"])
            assert sc["context"] == a
            for got, want in zip(_sky_ground_shift(sc), _expected_shift(sc)): assert np.abs(got - want).max() <= 2, (i, got, want)
            assert {k: str(v) for k, v in sc.items() if k != "context"} == {k: str(v) for k, v in plain.items() if k != "context"}  # only the background changes
    assert len(set(CONTEXTS)) == len(ACTIVITIES)
    rev = [sample_scene(i, "test", context_p=1.0, context_test="reversed") for i in range(24)]
    assert all(sc["context"] == len(ACTIVITIES) - 1 - ACTIVITIES.index(sc["activity"]) for sc in rev)
    assert all(sample_scene(i, "test", context_p=1.0, context_test="random")["context"] is None for i in range(24))
    half = np.mean([sample_scene(i, "train", context_p=0.5)["context"] is not None for i in range(240)])
    assert 0.4 < half < 0.6
    # the image: the same scene, another sky and ground
    sc = sample_scene(3, "train", context_p=1.0); plain = sample_scene(3, "train")
    assert not np.array_equal(_px(draw_scene(sc)), _px(draw_scene(plain)))
    assert np.array_equal(_px(draw_scene(dict(sc, context=None))), _px(draw_scene(plain)))


def test_keypoint_noise_moves_the_recorded_joints_not_the_image(tmp_path):
    a = generate(tmp_path / "a", 60, 0, 24, workers=1, progress=False)
    b = generate(tmp_path / "b", 60, 0, 24, workers=1, progress=False, keypoint_noise=0.05)
    da, db = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert {k: v for k, v in da.items() if k.startswith("images/")} == {k: v for k, v in db.items() if k.startswith("images/")}
    assert read_jsonl(tmp_path / "b" / "records_true.jsonl") == a and not (tmp_path / "a" / "records_true.jsonl").exists()
    rel = []
    for ra, rb in zip(a, b):
        pa, pb = ra.people[0], rb.people[0]
        assert pa.visible == pb.visible and pa.scale == pb.scale
        ja, jb, m = pa.array, pb.array, pa.array[:, 0] >= 0
        assert ((jb[~m] == -1).all()) and ((jb[m] >= 0) & (jb[m] < ra.width)).all()
        inner = m & (ja > 2).all(1) & (ja < ra.width - 3).all(1)  # not clipped at the border
        rel.append(((jb - ja)[inner] / (pa.scale * 200)).ravel())
    rel = np.concatenate(rel)
    assert abs(rel.mean()) < 0.01 and 0.04 < rel.std() < 0.06  # about 5% of the person's height per coordinate
    generate(tmp_path / "b", 60, 0, 24, workers=1, progress=False)  # back to neutral: the truth file goes
    assert not (tmp_path / "b" / "records_true.jsonl").exists()


@pytest.mark.parametrize("kw, msg", [
    (dict(bystander_scale=[0.8, 0.3]), "bystander_scale must be [low, high]"),
    (dict(bystander_opacity=[0.5, 1.5]), "bystander_opacity must be [low, high]"),
    (dict(bystander_activity="others"), "bystander_activity must be one of"),
    (dict(context_p=1.2), "context_p must be a probability"),
    (dict(context_test="flipped"), "context_test must be one of"),
    (dict(keypoint_noise=-0.1), "keypoint_noise must be a fraction"),
    (dict(subject_only=1), "subject_only must be true or false"),
])
def test_bad_knobs(tmp_path, kw, msg):
    with pytest.raises(ValueError, match=msg.replace("[", r"\[")):
        generate(tmp_path, 2, 0, 0, progress=False, **kw)


def test_params_yaml_sets_every_knob_neutral():
    from conftest import ROOT
    from focusclip.config import load_params
    syn = load_params(ROOT / "params.yaml")["data"]["synthetic"]
    assert {k: syn[k] for k in KNOBS} == NEUTRAL  # the default pipeline's dataset is the one pinned above
