"""Pose estimation for photos without annotations (focusclip.pose): the pure parts always, the estimator when the
`pose` extra is installed, accuracy on the real frames in ../shared when they are there."""
import contextlib, io, json, os, shutil, subprocess, sys, warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focusclip.config import ParamsError, section
from focusclip.sources import DATA_CHOICES, DATA_DEFAULTS, data_params, prepare_data
from focusclip.data import Person, Record, RecordError, read_jsonl
from focusclip.readers import read_coco, read_mpii_json
from focusclip import pose
from focusclip.describe import describe_photo
from focusclip.pose import (NoPersonWarning, center_scale, head_size, keypoints_to_mpii, people_from_keypoints, pckh,
                            pckh_image, prepare_images, read_images, read_labels, read_photo)

ROOT = Path(__file__).resolve().parents[1]
# a standing person, COCO-17 order (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles; left before right)
COCO = np.array([[100, 30], [104, 27], [96, 27], [108, 29], [92, 29], [115, 50], [85, 50], [120, 75], [80, 75],
                 [122, 98], [78, 98], [110, 100], [90, 100], [111, 140], [89, 140], [112, 180], [88, 180]], float)


def kp(conf=0.9):
    return np.c_[COCO, np.full(17, conf)]


@pytest.fixture
def no_extra(monkeypatch):
    "As if `focusclip[pose]` were not installed: importing its packages raises ImportError, and no estimator was ever loaded."
    for p in pose.POSE_PACKAGES: monkeypatch.setitem(sys.modules, p, None)
    pose.load_estimator.cache_clear()  # an estimator an earlier test loaded in this process would otherwise answer


@pytest.fixture(scope="module")
def estimator():
    if not pose.have_pose(): pytest.skip(f"the pose extra is not installed ({pose.POSE_EXTRA})")  # not importorskip: import through focusclip
    return pose.load_estimator("cpu")


# --- without the extra -------------------------------------------------------------------------------------------

def test_module_imports_and_names_the_extra_without_it(no_extra, tmp_path):
    assert not pose.have_pose()
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    for call in (pose.require_pose, pose.model_file, lambda: pose.load_estimator.__wrapped__("cpu"),
                 lambda: pose.estimate_record(tmp_path / "a.png"), lambda: describe_photo(tmp_path / "a.png"),
                 lambda: read_images(tmp_path, progress=False)):
        with pytest.raises(ImportError, match=r'needs the optional extra: pip install "focusclip\[pose\]"'): call()


def test_cli_without_extra_is_one_line_naming_it(no_extra, tmp_path):
    from focusclip.cli import describe_main
    err = io.StringIO()
    with contextlib.redirect_stderr(err): assert describe_main(["--image", str(tmp_path / "photo.jpg")]) == 2
    assert err.getvalue().startswith("error: pose estimation needs the optional extra") and "Traceback" not in err.getvalue()


def test_mapping_follows_the_coco_reader():
    xy, vis = keypoints_to_mpii(kp())
    assert vis.tolist() == [1] * 16
    assert xy[0].tolist() == [88, 180] and xy[5].tolist() == [112, 180]  # r_ankle <- COCO right_ankle (16), l_ankle <- 15
    assert xy[10].tolist() == [78, 98] and xy[15].tolist() == [122, 98]  # r_wrist <- 10, l_wrist <- 9
    assert xy[6].tolist() == [100, 100] and xy[7].tolist() == [100, 50]
    face = COCO[:5].mean(0)
    np.testing.assert_allclose(xy[8], xy[7] + 0.33 * (face - xy[7])); np.testing.assert_allclose(xy[9], xy[7] + 1.67 * (face - xy[7]))


def test_visibility_from_confidence_keeps_positions():
    k = kp(); k[[11, 12], 2] = 0.3  # both hips unsure: hips and pelvis not visible
    xy, vis = keypoints_to_mpii(k, min_confidence=0.5)
    assert np.flatnonzero(vis == 0).tolist() == [2, 3, 6]
    assert xy[6].tolist() == [100, 100]  # still placed (MPII stores occluded joints the same way)
    _, vis = keypoints_to_mpii(kp(0.2))
    assert vis.sum() == 0
    k = kp(); k[[1, 2, 3, 4], 2] = 0.0  # only the nose is sure: the face centre is the nose
    xy, vis = keypoints_to_mpii(k)
    assert vis[9] == 1 and np.allclose(xy[9], xy[7] + 1.67 * (COCO[0] - xy[7]))


def test_center_and_scale_as_mpii_defines_them():
    xy, vis = keypoints_to_mpii(kp())
    c, s = center_scale(xy, vis)
    assert c == [100.0, (xy[9, 1] + 180) / 2]  # middle of the visible joints' box
    assert s == pytest.approx(6.0 * np.hypot(*(xy[9] - xy[8])) / 200)  # six head segments over 200 px
    vis2 = vis.copy(); vis2[9] = 0
    c2, s2 = center_scale(xy, vis2)
    assert s2 == pytest.approx(1.15 * (180 - xy[8, 1]) / 200)  # no head top: 1.15 x the box's larger side
    assert center_scale(xy, np.eye(16)[3]) == (None, None)
    same = np.tile([[5.0, 5.0]], (16, 1))
    assert center_scale(same, [0] * 8 + [1, 1] + [0] * 6) == ([5.0, 5.0], None)  # zero extent: no scale rather than 0


def test_people_from_keypoints_scale_back_to_full_size():
    people = people_from_keypoints(np.stack([kp(), kp(0.1)]), factor=(4.0, 2.0))
    assert len(people) == 2 and all(isinstance(p, Person) for p in people)
    np.testing.assert_allclose(people[0].joints[6], [(100.5 * 4) - 0.5, (100.5 * 2) - 0.5])
    assert people[1].visible == [0] * 16 and people[1].center is None
    assert people_from_keypoints(np.zeros((0, 17, 3))) == []


def test_pckh_pairs_people_and_counts_unmatched():
    xy, _ = keypoints_to_mpii(kp())
    g = Person(xy.tolist(), [1] * 16)
    assert head_size(g) == pytest.approx(0.75 * np.hypot(*(xy[9] - xy[8])))
    near = Person((xy + [0.49 * head_size(g), 0]).tolist(), [0] * 16)  # visibility does not matter: positions are scored
    far = Person((xy + 400).tolist(), [1] * 16)
    r = pckh_image([g, far], [far, near])
    assert r["matched"] == 2 and r["correct"].sum() == 32
    s = pckh([pckh_image([g, far], [near])])
    assert s["pckh"] == 50.0 and s["joints"] == 28 and s["people"] == 2 and s["matched"] == 1  # pelvis, thorax left out
    assert pckh([pckh_image([g], [])])["pckh"] == 0.0
    g.joints[8] = [-1, -1]
    assert pckh_image([g], [near])["people"] == 0  # no head size: not scored


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_read_photo_modes_become_rgb(tmp_path, mode):
    im = Image.new("RGB", (60, 40), (10, 200, 30))
    if mode == "I;16": im = Image.fromarray(np.full((40, 60), 30000, np.uint16))
    elif mode == "P": im = im.convert("P")
    else: im = im.convert(mode)
    f = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png"); im.save(f)
    out, size = read_photo(f)
    assert out.mode == "RGB" and out.size == (60, 40) and size == (60, 40)


def test_read_photo_tiny_huge_corrupt_missing(tmp_path, monkeypatch):
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    assert read_photo(tmp_path / "dot.png")[0].size == (1, 1)
    Image.fromarray(np.zeros((3000, 4000, 3), np.uint8)).save(tmp_path / "big.jpg", quality=40)
    im, size = read_photo(tmp_path / "big.jpg")
    assert im.size == (1280, 960) and size == (4000, 3000)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "big.jpg").read_bytes()[:1500])
    with pytest.raises(RecordError, match="cut.jpg: cannot read image"): read_photo(tmp_path / "cut.jpg")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(RecordError, match="text.jpg: not a readable image"): read_photo(tmp_path / "text.jpg")
    with pytest.raises(FileNotFoundError, match="nope.jpg: image not found"): read_photo(tmp_path / "nope.jpg")
    Image.new("RGB", (120, 120)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 14,400 pixels: past twice the limit, a decompression bomb
    with pytest.raises(RecordError, match="bomb.png: image too large to decode safely"): read_photo(tmp_path / "bomb.png")


def test_labels_csv_and_folder_errors(tmp_path):
    (tmp_path / "l.csv").write_text("\ufeffimage,activity,category\na.jpg, playing guitar ,music\n")
    assert read_labels(tmp_path / "l.csv") == {"a.jpg": {"image": "a.jpg", "activity": "playing guitar", "category": "music"}}
    (tmp_path / "bad.csv").write_text("img,act\n")
    with pytest.raises(RecordError, match="needs columns image and activity"): read_labels(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("image,activity\n,x\n")
    with pytest.raises(RecordError, match="empty.csv:2: empty image name"): read_labels(tmp_path / "empty.csv")
    with pytest.raises(FileNotFoundError, match="not a folder of photos"): read_images(tmp_path / "none")
    photos = tmp_path / "photos"; photos.mkdir()
    with pytest.raises(RecordError, match="no images"): read_images(photos)
    Image.new("RGB", (8, 8)).save(photos / "a.jpg"); Image.new("RGB", (8, 8)).save(photos / "a.png")
    with pytest.raises(RecordError, match="a.jpg and a.png would share the record id 'a'"): read_images(photos)
    (photos / "a.png").unlink()
    (tmp_path / "more.csv").write_text("image,activity\na.jpg,x\nb.jpg,y\n")
    with pytest.raises(RecordError, match=r"rows name images not in .*\['b.jpg'\]"): read_images(photos, tmp_path / "more.csv")


def test_data_section_accepts_images_and_checks_its_keys(tmp_path):
    assert "images" in DATA_CHOICES["source"] and DATA_DEFAULTS["images"] == pose.IMAGES_DEFAULTS
    from focusclip.pipeline import load_config
    cfg = data_params({"data": {"source": "images", "images": {"root": "x", "labels": "y.csv"}}})
    assert cfg["images"] == {**pose.IMAGES_DEFAULTS, "root": "x", "labels": "y.csv"}  # checked and filled in with the rest
    full = load_config({"data": {"source": "images", "images": {"root": "x"}}})["data"]["images"]
    assert full["root"] == "x" and full["min_score"] == pose.IMAGES_DEFAULTS["min_score"]
    with pytest.raises(ParamsError, match=r"params.yaml:data.images: unknown key\(s\) \['folder'\]"):
        load_config({"data": {"images": {"folder": "x"}}})
    with pytest.raises(ParamsError, match="params.yaml:data.images.val_fraction: expected float"):
        data_params({"data": {"images": {"val_fraction": "a lot"}}})
    with pytest.raises(ParamsError, match=r"params.yaml:data.images.test_fraction: must be in \[0, 1\]"):
        data_params({"data": {"images": {"test_fraction": 1.5}}})
    with pytest.raises(FileNotFoundError, match="data.source is 'images' but"):
        prepare_images(tmp_path / "none", tmp_path)


# --- with the extra ----------------------------------------------------------------------------------------------

def test_model_ships_in_the_wheel(estimator):
    f = pose.model_file()
    assert f.name == "yolo11n-pose.pt" and f.stat().st_size > 5_000_000 and pose.have_pose()


def test_ultralytics_leaves_pil_and_the_network_alone(estimator, tmp_path):
    "ultralytics replaces PIL.Image.open (pip-installing a HEIF plugin for unidentified files), torch.save and print options: undone."
    import torch, ultralytics.utils.patches as up
    assert Image.open is up._image_open and torch.save is up._torch_save and np.get_printoptions()["formatter"] is None
    assert torch._tensor_str.PRINT_OPTS.linewidth == 80
    assert os.environ["YOLO_AUTOINSTALL"] == "False" and os.environ["YOLO_OFFLINE"] == "1"
    (tmp_path / "notes.jpg").write_text("not a photo")
    with pytest.raises(RecordError, match="notes.jpg: not a readable image"): read_photo(tmp_path / "notes.jpg")


def test_no_person_gives_a_record_with_nobody(estimator, tmp_path):
    Image.new("RGB", (320, 240), (190, 190, 190)).save(tmp_path / "wall.png")
    with pytest.warns(NoPersonWarning, match="wall.png: no person found"):
        rec = pose.estimate_record(tmp_path / "wall.png", activity="nothing", model=estimator)
    assert (rec.people, rec.width, rec.height, rec.activity, rec.id) == ([], 320, 240, "nothing", "wall")


@pytest.mark.parametrize("size,mode", [((1, 1), "RGB"), ((8, 8), "L"), ((3, 500), "RGBA")])
def test_tiny_and_thin_images_go_through(estimator, tmp_path, size, mode):
    Image.new(mode, size).save(tmp_path / "t.png")
    with pytest.warns(NoPersonWarning):
        rec = pose.estimate_record(tmp_path / "t.png", model=estimator)
    assert (rec.width, rec.height) == size and rec.people == []


def _photo(shared):
    return shared / "mpii" / "images" / "005808361.jpg"


def test_modes_and_huge_photo_give_the_same_people(estimator, shared, tmp_path):
    ref = pose.estimate_record(_photo(shared), model=estimator)
    assert len(ref.people) >= 1
    im = Image.open(_photo(shared))
    im.convert("L").save(tmp_path / "gray.png"); im.convert("RGBA").save(tmp_path / "rgba.png")
    im.resize((im.width * 4, im.height * 4), Image.BICUBIC).save(tmp_path / "huge.jpg", quality=90)
    hs = head_size(ref.people[0])
    for name, k in (("gray.png", 1), ("rgba.png", 1), ("huge.jpg", 4)):
        rec = pose.estimate_record(tmp_path / name, model=estimator)
        assert (rec.width, rec.height) == (ref.width * k, ref.height * k)
        d = np.linalg.norm(np.asarray(rec.people[0].joints) / k - np.asarray(ref.people[0].joints), axis=1)
        assert np.median(d) < 0.25 * hs, (name, d)  # the same person, in the file's own pixels


def test_pckh_on_real_frames_above_floor(estimator, shared):
    "PCKh@0.5 measured 93.9% (MPII frames) and 73.6% (COCO sample) on this machine; the floors leave room for other builds."
    sets = {"mpii": read_mpii_json(shared / "mpii/test_mpii.json", shared / "mpii/images"),
            "coco": read_coco(shared / "coco/test_coco.json", shared / "coco")}
    out = {}
    for name, recs in sets.items():
        out[name] = pckh([pckh_image(r.people, pose.estimate_people(r.image, model=estimator)[0]) for r in recs])
    assert out["mpii"]["pckh"] >= 85 and out["mpii"]["matched"] == out["mpii"]["people"] == 5, out
    assert out["coco"]["pckh"] >= 65 and out["coco"]["matched"] == out["coco"]["people"] == 12, out


def test_describe_cli_on_a_photo(estimator, shared, tmp_path, capsys):
    from focusclip.cli import describe_main
    fig = tmp_path / "fig.png"
    assert describe_main(["--image", str(_photo(shared)), "--activity", "repairing a truck", "--figure", str(fig),
                          "--params", str(tmp_path / "none.yaml")]) == 0
    out, err = capsys.readouterr()
    assert "repairing a truck" in out and ("one person" in out or "people" in out)
    assert "people found in" in err and str(fig) in err
    with Image.open(fig) as im: assert im.size[0] >= 1200


def test_describe_photo_openai_backend_against_local_server(estimator, shared, tmp_path, monkeypatch):
    from focusclip.testing import FakeLLM
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeLLM() as srv:
        text, rec, fig = describe_photo(_photo(shared), "repairing a truck", backend="openai", base_url=srv.base_url,
                                             model="fake-llm", max_retries=1, backoff=0.01)
        assert srv.requests == 1 and fig is None
    assert text and len(rec.people) >= 1
    with pytest.raises(ValueError, match="rules or openai"): describe_photo(_photo(shared), backend="hub")


def test_folder_of_photos_to_records_heatmaps_descriptions(estimator, shared, tmp_path):
    photos = tmp_path / "photos"; photos.mkdir()
    for f in sorted((shared / "coco").glob("*.jpg"))[:2]: shutil.copy(f, photos / f.name)
    Image.new("RGB", (64, 64), (255, 255, 255)).save(photos / "blank.png")
    (photos / "labels.csv").write_text("image,activity,split\n000000000785.jpg,skiing,test\nblank.png,nothing,train\n")
    with pytest.warns(NoPersonWarning, match=r"no person found in 1 of 3 photos \(blank.png\)"):
        images = {"root": str(photos), "labels": str(photos / "labels.csv"), "cache": str(tmp_path / "pc.jsonl")}
        recs = prepare_data({"data": {"source": "images", "out_dir": str(tmp_path / "records"), "images": images}}, progress=False)
    back = read_jsonl(tmp_path / "records" / "records.jsonl")
    assert [(r.id, r.activity, r.split, len(r.people)) for r in back] == \
        [("000000000785", "skiing", "test", 1), ("000000040083", "", back[1].split, 2), ("blank", "nothing", "train", 0)]
    from focusclip.heatmaps import record_heatmap
    from focusclip.describe import describe_records
    assert record_heatmap(back[1], 32).max() > 0.5 and record_heatmap(back[2], 32).max() == 0
    rows = describe_records(back, backend="rules", per_image=1).rows
    assert len(rows) == 3 and rows[0]["text"] and "skiing" in rows[0]["text"]
    cache = tmp_path / "pc.jsonl"
    assert len(cache.read_text().splitlines()) == 3
    again = read_images(photos, photos / "labels.csv", cache=cache, progress=False, model=None)  # all from the cache
    assert [r.people for r in again] == [r.people for r in recs]
    assert len(cache.read_text().splitlines()) == 3


def test_explorer_opens_a_folder_and_draws_joints(estimator, shared, tmp_path):
    from focusclip.explorer import explore_folder
    photos = tmp_path / "p"; photos.mkdir()
    shutil.copy(_photo(shared), photos / "truck.jpg")
    ex = explore_folder(photos, size=200)
    assert ex.controls["image"].options[0][0].startswith("truck (") and "people" in ex.info.value
    drawn = ex.photo_image.value
    ex.controls["joints"].value = False
    assert ex.photo_image.value != drawn and ex.heatmap_image.value


@pytest.mark.slow
def test_data_stage_with_images_source(estimator, shared, tmp_path, monkeypatch):
    "The data stage notebook under papermill with `data.source: images`."
    photos = tmp_path / "photos"; photos.mkdir()
    shutil.copy(_photo(shared), photos / "truck.jpg")
    (tmp_path / "params.yaml").write_text(f"base:\n  seed: 42\ndata:\n  source: images\n  out_dir: data/records\n"
                                          f"  images:\n    root: {photos}\n")
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cmd = [sys.executable, "-m", "papermill", "-k", "python3", "--engine", "focusclip", str(ROOT / "stages" / "data.ipynb"), str(tmp_path / "out.ipynb"),
           "-p", "params_path", "params.yaml", "--cwd", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    recs = read_jsonl(tmp_path / "data" / "records" / "records.jsonl")
    assert len(recs) == 1 and recs[0].people and (tmp_path / "data" / "records" / recs[0].image).resolve() == (photos / "truck.jpg").resolve()
    assert len((tmp_path / "data" / "pose_cache.jsonl").read_text().splitlines()) == 1  # kept outside the stage's output
