"""focusclip.heatmaps: the fast paths against the paper's reference, edge cases, the stage and the benchmark."""
import json, os, subprocess, sys
import numpy as np
import pytest
import torch
from conftest import ROOT
from focusclip.data import Record, Person, write_jsonl
from focusclip.heatmaps import (PARTS, PART_NAMES, HEATMAP_DEFAULTS, heatmap, heatmap_reference, person_heatmap,
                                part_joints, part_ellipses, record_heatmap, records_to_arrays,
                                heatmaps_torch, highlight, random_people, load_heatmap, write_heatmaps)
from focusclip.explorer import explore


def same(a, b, eps=1e-5):
    "Equal NaN masks, and values within eps elsewhere."
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    assert np.array_equal(np.isnan(a), np.isnan(b)), f"NaN pixels differ: {np.isnan(a).sum()} vs {np.isnan(b).sum()}"
    d = np.abs(np.nan_to_num(a) - np.nan_to_num(b)).max(initial=0)
    assert d <= eps, f"max |diff| {d:.3g} > {eps}"


def zero_axis(j, v, size, **kw):
    e = part_ellipses(j, v, size, zero_extent="paper", **kw)
    return bool((e["a"] == 0).any() or (e["b"] == 0).any())


def arm_person():
    "One person with only the left upper arm's joints visible (a single part), as plain lists."
    j = np.full((16, 2), -1.0); v = np.zeros(16, int)
    j[[13, 14, 7]] = [[40, 30], [52, 61], [47, 12]]; v[[13, 14, 7]] = 1
    return j, v


def test_parts_are_the_papers():
    assert PARTS["head"] == (7, 8, 9, 12, 13) and PARTS["torso"] == (6, 7, 12, 13, 2, 3)
    assert PARTS["right_lower_leg"] == (1, 0, 2) and len(PARTS) == 10
    assert set(HEATMAP_DEFAULTS["parts"]) == set(PART_NAMES)
    assert sorted({j for g in PARTS.values() for j in g}) == list(range(16))


def test_single_part_closed_form():
    j, v = arm_person()
    hm = heatmap(j, v, (80, 70), parts=["left_upper_arm"])
    # box x 40..52 -> cx 46, a 6; y 12..61 -> cy 36, b 24
    assert hm[36, 46] == pytest.approx(1.0)
    assert hm[36, 52] == pytest.approx(np.exp(-0.5), abs=1e-6)
    assert hm[60, 46] == pytest.approx(np.exp(-0.5), abs=1e-6)
    assert hm[40, 49] == pytest.approx(np.exp(-(9 / 72 + 16 / 1152)), abs=1e-6)


@pytest.mark.parametrize("blend", ["sum", "max"])
def test_fast_matches_reference_random_poses(blend):
    "Property-style: many random frames (sizes, people, missing joints), fast == reference where defined."
    rng = np.random.default_rng(1)
    n_defined = 0
    for trial in range(40):
        W, H = int(rng.integers(1, 160)), int(rng.integers(1, 120))
        P = int(rng.integers(0, 5))
        j, v, s = random_people(rng, P, W, H, p_missing=float(rng.uniform(0, 0.6)))
        if trial % 3 == 0: j = j + rng.uniform(-0.4, 0.4, j.shape) * [W, H]  # push people partly out of the frame
        ref = heatmap_reference(j, v, W, H, blend=blend)
        same(heatmap(j, v, (W, H), scales=s, blend=blend, zero_extent="paper"), ref)
        if not zero_axis(j, v, (W, H)):
            n_defined += 1
            same(heatmap(j, v, (W, H), scales=s, blend=blend), ref)
            assert np.isfinite(ref).all()
    assert n_defined >= 10


def test_multi_person_sum_and_clip():
    rng = np.random.default_rng(2)
    j, v, s = random_people(rng, 4, 200, 150, p_missing=0.0)
    total = heatmap(j, v, (200, 150), scales=s)
    singles = [person_heatmap(j[i], v[i], (200, 150), scale=s[i]) for i in range(4)]
    same(total, np.clip(np.sum(singles, 0), 0, 1))
    same(heatmap(j, v, (200, 150), scales=s, blend="max"), np.max([person_heatmap(j[i], v[i], (200, 150), scale=s[i], blend="max") for i in range(4)], 0))
    assert total.max() == pytest.approx(1.0) and total.dtype == np.float32


def test_missing_joints_are_ignored():
    rng = np.random.default_rng(3)
    j, v, s = random_people(rng, 1, 120, 100, p_missing=0.0)
    j2, v2 = j.copy(), v.copy()
    v2[0, [0, 5, 10]] = 0; j2[0, [0, 5, 10]] = [[5000, -300]] * 3  # missing: the coordinates must not matter
    a = heatmap(j2, v2, (120, 100), scales=s)
    same(a, heatmap_reference(j2, v2, 120, 100)) if not zero_axis(j2, v2, (120, 100)) else None
    j3 = j2.copy(); j3[0, [0, 5, 10]] = -1
    same(a, heatmap(j3, v2, (120, 100), scales=s))
    assert not np.array_equal(a, heatmap(j, v, (120, 100), scales=s))


def test_all_missing_gives_empty_heatmap():
    j = np.full((3, 16, 2), -1.0); v = np.zeros((3, 16))
    for blend in ["sum", "max"]:
        hm = heatmap(j, v, (33, 17), size=(20, 10), blend=blend)
        assert hm.shape == (10, 20) and hm.max() == 0
    rec = Record(id="nobody", image="x.png", width=50, height=40, people=[Person(j[0].tolist(), [0] * 16)])
    assert record_heatmap(rec, 16).max() == 0
    assert record_heatmap(Record(id="empty", image="x.png", width=50, height=40), (8, 4)).shape == (4, 8)
    assert heatmap(np.zeros((0, 16, 2)), np.zeros((0, 16)), (10, 10)).max() == 0


def test_single_joint_part_is_skipped():
    j, v = arm_person()
    v1 = np.zeros(16, int); v1[7] = 1  # only the thorax: no part has 2 joints
    assert heatmap(j, v1, (80, 70)).max() == 0 and heatmap_reference(j, v1, 80, 70).max() == 0
    v2 = np.zeros(16, int); v2[[13, 14]] = 1  # left upper arm and left lower arm both have 2 joints; the head only 1
    e = part_ellipses(j, v2, (80, 70))
    assert [PART_NAMES[k] for k in e["part"]] == ["left_upper_arm", "left_lower_arm"]


def test_nan_coordinates_are_a_clear_error():
    j, v = arm_person()
    j[14] = [np.nan, 3]
    with pytest.raises(ValueError, match=r"person 0, joint 14 \(l_elbow\)"): heatmap(j, v, (80, 70))
    with pytest.raises(ValueError, match="finite"): heatmap_reference(j, v, 80, 70)
    j[14] = [np.inf, 3]
    with pytest.raises(ValueError, match="finite"): heatmap(j, v, (80, 70))
    J = torch.zeros(2, 1, 16, 2); J[1, 0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"image 1, person 0, joint 3 \(l_hip\)"): heatmaps_torch(J, torch.ones(2, 1, 16), None, 8)
    rec = Record(id="bad", image="x.png", width=80, height=70, people=[Person(np.zeros((16, 2)).tolist(), [1] * 16)])
    rec.people[0].joints[2] = [float("nan"), 1.0]
    with pytest.raises(ValueError, match="record 'bad'"): record_heatmap(rec, 8)


def test_joints_outside_the_frame():
    rng = np.random.default_rng(4)
    j, v, s = random_people(rng, 2, 100, 80, p_missing=0.0)
    j[0] += [-70, 0]; j[1] += [0, 60]  # the first person mostly left of the frame, the second below it
    ref = heatmap_reference(j, v, 100, 80)
    same(heatmap(j, v, (100, 80), scales=s, zero_extent="paper"), ref)
    far = np.full((1, 16, 2), 0.0); far[0, :, 0] = np.linspace(5000, 5100, 16); far[0, :, 1] = np.linspace(-900, -800, 16)
    assert heatmap(far, np.ones((1, 16)), (100, 80)).max() < 1e-6  # a person far outside leaves the frame empty


@pytest.mark.parametrize("W,H", [(1, 1), (3, 5), (5, 3), (2, 7)])
def test_tiny_frames(W, H):
    rng = np.random.default_rng(W * 10 + H)
    for _ in range(5):
        j, v, s = random_people(rng, 2, W, H)
        same(heatmap(j, v, (W, H), scales=s, zero_extent="paper"), heatmap_reference(j, v, W, H))
        hm = heatmap(j, v, (W, H), scales=s)  # the default: defined everywhere, even when every part collapses
        assert hm.shape == (H, W) and np.isfinite(hm).all() and 0 <= hm.min() <= hm.max() <= 1
    assert heatmap(*arm_person(), (80, 70), size=(1, 1)).shape == (1, 1)


def test_huge_frames():
    rng = np.random.default_rng(5)
    j, v, s = random_people(rng, 3, 40000, 30000, p_missing=0.0)
    small = heatmap(j, v, (40000, 30000), size=64, scales=s)
    assert small.shape == (64, 64) and small.max() > 0.5
    big = heatmap(j, v, (40000, 30000), size=(4000, 3000), scales=s)
    assert big.shape == (3000, 4000)
    e = part_ellipses(j, v, (40000, 30000), s)
    for (i, k) in [(1500, 2000), (100, 3900), (2999, 0), (1234, 2345)]:
        x, y = (k + 0.5) * 10 - 0.5, (i + 0.5) * 10 - 0.5
        want = min(1.0, np.exp(-((x - e["cx"]) ** 2 / (2 * e["a"] ** 2) + (y - e["cy"]) ** 2 / (2 * e["b"] ** 2))).sum())
        assert big[i, k] == pytest.approx(want, abs=1e-5)


def test_zero_semi_axis_options():
    j, v = arm_person()
    j[[13, 14, 7]] = [[40.2, 30], [40.9, 61], [40.0, 12]]  # vertical after truncation: a = 0
    ref = heatmap_reference(j, v, 80, 70, parts=part_joints(["left_upper_arm"]))
    assert np.isnan(ref[:, 40]).all() and np.isfinite(np.delete(ref, 40, axis=1)).all()  # the original: a NaN column
    same(heatmap(j, v, (80, 70), parts=["left_upper_arm"], zero_extent="paper"), ref)
    hm = heatmap(j, v, (80, 70), parts=["left_upper_arm"], scales=[0.3])  # min extent 0.05 * 60 px = 3 px
    assert np.isfinite(hm).all() and hm[36, 43] == pytest.approx(np.exp(-0.5), abs=1e-6)
    hm2 = heatmap(j, v, (80, 70), parts=["left_upper_arm"])  # no scale: the joints' box (49 px) is the person's height
    assert hm2[36, 40] == pytest.approx(1.0) and hm2[24, 40] == pytest.approx(np.exp(-0.5 * (12 / 24) ** 2), abs=1e-6)
    t = heatmaps_torch(torch.tensor(j)[None, None], torch.tensor(v)[None, None], None, (80, 70), parts=["left_upper_arm"], zero_extent="paper")
    same(t[0].numpy(), ref)
    # clamp widens every thin part, min only the zero ones
    j2, v2 = arm_person()
    a_min = part_ellipses(j2, v2, (80, 70), [1.0], parts=["left_upper_arm"])["a"]
    a_clamp = part_ellipses(j2, v2, (80, 70), [1.0], parts=["left_upper_arm"], zero_extent="clamp")["a"]
    assert a_min.tolist() == [6.0] and a_clamp.tolist() == [10.0]


def test_person_level_and_part_selection():
    rng = np.random.default_rng(6)
    j, v, s = random_people(rng, 2, 90, 70)
    same(heatmap(j, v, (90, 70), scales=s, person_level=True, zero_extent="paper"),
         heatmap_reference(j, v, 90, 70, parts=[tuple(range(16))]))
    e = part_ellipses(j, v, (90, 70), s, person_level=True)
    assert len(e["a"]) == 2 and set(e["part"]) == {0}
    legs = ["left_lower_leg", "right_lower_leg"]
    same(heatmap(j, v, (90, 70), scales=s, parts=legs, zero_extent="paper"), heatmap_reference(j, v, 90, 70, parts=part_joints(legs)))
    with pytest.raises(ValueError, match="unknown body part"): heatmap(j, v, (90, 70), parts=["wing"])


def test_any_output_size_resamples_the_source_heatmap():
    j, v = arm_person()
    full = heatmap(j, v, (80, 70))
    half = heatmap(j, v, (80, 70), size=(40, 35))
    # output pixel (i, k) samples the source at ((k + .5) * 2 - .5, (i + .5) * 2 - .5): between four source pixels
    assert half[18, 23] == pytest.approx(full[36:38, 46:48].mean(), abs=0.02)
    same(heatmap(j, v, (80, 70), size=(80, 70)), full, 0)


def test_torch_matches_numpy():
    rng = np.random.default_rng(7)
    recs = []
    for i in range(5):
        W, H = int(rng.integers(20, 300)), int(rng.integers(20, 300))
        j, v, s = random_people(rng, i % 4, W, H)
        recs.append(Record(id=f"r{i}", image="x.png", width=W, height=H,
                           people=[Person(j[p].tolist(), v[p].tolist(), scale=float(s[p]) if p % 2 == 0 else None) for p in range(len(j))]))
    J, V, S, SRC = (torch.from_numpy(a) for a in records_to_arrays(recs, max_people=4))
    assert J.shape == (5, 4, 16, 2) and not V[0].any()  # the first record has no people: all padding
    for opts in [{}, {"blend": "max"}, {"person_level": True}, {"zero_extent": "clamp", "min_extent": 0.1},
                 {"parts": ["torso", "head"], "sigma_scale": 1.7}, {"zero_extent": "paper"}]:
        for size in [(48, 32), (7, 5)]:
            t = heatmaps_torch(J, V, S, size, SRC, **opts)
            assert t.shape == (5, size[1], size[0]) and t.dtype == torch.float32
            same(t.numpy(), np.stack([record_heatmap(r, size, **opts) for r in recs]))
    with pytest.raises(ValueError, match="more than max_people"): records_to_arrays(recs, max_people=2)


def test_torch_same_size_matches_reference():
    rng = np.random.default_rng(8)
    j, v, s = random_people(rng, 3, 160, 120)
    t = heatmaps_torch(torch.tensor(j)[None], torch.tensor(v)[None], torch.tensor(s)[None], (160, 120), zero_extent="paper")
    same(t[0].numpy(), heatmap_reference(j, v, 160, 120))


def test_highlight():
    img = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3) / 12
    hm = np.array([[1, 0], [0.5, 0]], dtype=np.float32)
    out = highlight(img, hm, 0.2)
    np.testing.assert_allclose(out[0, 0], img[0, 0]); np.testing.assert_allclose(out[0, 1], img[0, 1] * 0.2)
    np.testing.assert_allclose(out[1, 0], img[1, 0] * 0.6)
    alpha = torch.tensor(0.2, requires_grad=True)
    t = highlight(torch.from_numpy(img).permute(2, 0, 1)[None], torch.from_numpy(hm)[None], alpha)
    np.testing.assert_allclose(t[0].permute(1, 2, 0).detach().numpy(), out, rtol=1e-6)
    t.sum().backward(); assert alpha.grad is not None and alpha.grad.item() != 0
    with pytest.raises(ValueError, match="differ in size"): highlight(img, hm[:1], 0.5)


def test_write_and_load(tmp_path):
    j, v = arm_person()
    recs = [Record(id="a", image="a.png", width=80, height=70, people=[Person(j.tolist(), v.tolist())]),
            Record(id="b", image="b.png", width=80, height=70)]
    paths = write_heatmaps(recs, tmp_path / "hm", 32)
    back = load_heatmap(paths[0]) / 255
    assert back.shape == (32, 32) and np.abs(back - record_heatmap(recs[0], 32)).max() <= 0.5 / 255 + 1e-6
    assert load_heatmap(paths[1]).max() == 0
    with pytest.raises(FileNotFoundError, match="missing.png: precomputed heatmap not found"): load_heatmap(tmp_path / "missing.png")


def test_explorer_updates(tmp_path):
    from PIL import Image
    j, v = arm_person()
    Image.fromarray(np.full((70, 80, 3), 180, np.uint8)).save(tmp_path / "a.png")
    w = explore([Record(id="a", image="a.png", width=80, height=70, people=[Person(j.tolist(), v.tolist())])], tmp_path, size=80)
    hm0, hi0 = w.heatmap_image.value, w.highlight_image.value
    w.controls["min_extent"].value = 0.3; assert w.heatmap_image.value == hm0  # no zero semi-axis here: min extent has no effect
    w.controls["sigma_scale"].value = 0.5; assert w.heatmap_image.value != hm0
    hm1 = w.heatmap_image.value
    w.controls["blend"].value = "max"; w.controls["alpha"].value = 0.9
    assert w.highlight_image.value != hi0
    w.controls["parts"]["left_upper_arm"].value = False; assert w.heatmap_image.value != hm1
    with pytest.raises(FileNotFoundError, match="gone.png"):
        explore([Record(id="g", image="gone.png", width=8, height=8)], tmp_path)


def test_real_mpii_frames(shared):
    from PIL import Image
    items = json.loads((shared / "mpii/test_mpii.json").read_text())
    for it in items[:2]:
        ip = shared / "mpii/images" / it["image"]
        W, H = Image.open(ip).size
        j, v = np.array(it["joints"]), np.array(it["joints_vis"])
        same(heatmap(j, v, (W, H), scales=[it["scale"]], zero_extent="paper"), heatmap_reference(j, v, W, H))


@pytest.mark.slow
def test_stage_notebook(tmp_path):
    "The papermill stages on a tiny record set: one PNG per record at params size (stale ones removed), then the figure."
    from PIL import Image
    rng = np.random.default_rng(9)
    (tmp_path / "data/records/images").mkdir(parents=True)
    recs = []
    for i in range(4):
        j, v, s = random_people(rng, i % 3, 64, 48)
        Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / f"data/records/images/{i}.png")
        recs.append(Record(id=f"img{i}", image=f"images/{i}.png", width=64, height=48, split=["train", "test"][i % 2],
                           people=[Person(j[p].tolist(), v[p].tolist(), scale=float(s[p])) for p in range(len(j))]))
    write_jsonl(recs, tmp_path / "data/records/records.jsonl")
    (tmp_path / "data/heatmaps").mkdir(); (tmp_path / "data/heatmaps/old.png").write_bytes(b"x")
    (tmp_path / "params.yaml").write_text("heatmaps:\n  size: 24\n  blend: max\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-m", "papermill", "-k", "python3", "--engine", "focusclip", str(ROOT / "stages/heatmaps.ipynb"), "out.ipynb",
                    "-p", "params_path", "params.yaml"], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    pngs = sorted(p.name for p in (tmp_path / "data/heatmaps").glob("*.png"))
    assert pngs == ["img0.png", "img1.png", "img2.png", "img3.png"]  # the stale one is gone
    im = Image.open(tmp_path / "data/heatmaps/img1.png")
    assert im.mode == "L" and im.size == (24, 24)
    np.testing.assert_allclose(load_heatmap(tmp_path / "data/heatmaps/img2.png") / 255, record_heatmap(recs[2], 24, blend="max"), atol=0.5 / 255 + 1e-6)
    assert not (tmp_path / "results/figures/heatmaps_grid.png").exists()  # the figure is its own stage
    subprocess.run([sys.executable, "-m", "papermill", "-k", "python3", "--engine", "focusclip", str(ROOT / "stages/heatmap_figure.ipynb"), "fig.ipynb",
                    "-p", "params_path", "params.yaml"], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    assert Image.open(tmp_path / "results/figures/heatmaps_grid.png").size[0] > 100
    (tmp_path / "params.yaml").write_text("heatmaps:\n  parts: [head, tail]\n")
    r = subprocess.run([sys.executable, "-m", "papermill", "-k", "python3", "--engine", "focusclip", str(ROOT / "stages/heatmaps.ipynb"), "out2.ipynb"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "params.yaml:heatmaps.parts: unknown body part(s) ['tail']" in r.stdout + r.stderr


@pytest.mark.slow
def test_benchmark_agreement():
    "benchmarks/heatmaps.py on a small run: the fast paths agree with the reference, and its last line (the speedup is the benchmark's to judge)."
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/heatmaps.py"), "--frames", "4", "--repeats", "3", "--ref-repeats", "1",
                        "--width", "320", "--height", "180"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert "agreement within 1e-05: yes" in r.stdout and lines[-1].startswith("heatmaps speedup: ") and lines[-1].endswith("x")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_torch_on_gpu_matches_cpu():
    rng = np.random.default_rng(10)
    J = np.full((3, 4, 16, 2), -1.0, np.float32); V = np.zeros((3, 4, 16), bool); S = np.full((3, 4), np.nan, np.float32)
    for b in range(3):
        j, v, s = random_people(rng, b + 1, 640, 480); J[b, :b + 1], V[b, :b + 1], S[b, :b + 1] = j, v > 0, s
    cpu = heatmaps_torch(torch.from_numpy(J), torch.from_numpy(V), torch.from_numpy(S), 224, (640, 480))
    gpu = heatmaps_torch(torch.from_numpy(J).cuda(), torch.from_numpy(V).cuda(), torch.from_numpy(S).cuda(), 224, (640, 480))
    assert gpu.device.type == "cuda"
    same(gpu.cpu().numpy(), cpu.numpy())
