"`focusclip-zeroshot --focus pose` on the real COCO and MPII photos in ../shared, with a tiny open_clip model a user brings."
import contextlib, csv, io, shutil
import numpy as np
import pytest
import torch
from PIL import Image
from focusclip.pose import have_pose

pytestmark = pytest.mark.skipif(not have_pose(), reason='the pose extra is not installed (pip install "focusclip[pose]")')


@pytest.fixture(scope="module")
def photos(shared, tmp_path_factory) -> dict:
    "A labelled folder (COCO: ski, baseball; a blank frame with nobody) and a flat one (MPII), and a plain open_clip model folder."
    from focusclip.testing import open_clip_folder
    d = tmp_path_factory.mktemp("photos")
    for cls, names in {"ski": ["000000000785.jpg"], "baseball": ["000000040083.jpg", "000000196141.jpg"]}.items():
        (d / "coco" / cls).mkdir(parents=True)
        for n in names: shutil.copy(shared / "coco" / n, d / "coco" / cls / n)
    Image.new("RGB", (320, 240), (128, 128, 128)).save(d / "coco" / "ski" / "blank.png")
    return dict(coco=d / "coco", mpii=shared / "mpii" / "images", model=open_clip_folder(d / "model"), root=d)


def zeroshot(*args) -> tuple[int, str]:
    from focusclip.cli import zeroshot_main
    err = io.StringIO()
    with contextlib.redirect_stderr(err): rc = zeroshot_main([str(a) for a in args])
    return rc, err.getvalue()


def test_focus_on_labelled_photos(photos):
    out, figs = photos["root"] / "coco.csv", photos["root"] / "figs"
    rc, err = zeroshot(photos["model"], photos["coco"], "--focus", "pose", "--out", out, "--figures", figs, "--topk", "2")
    assert rc == 0, err
    rows = {r["image"].split("/")[-1]: r for r in csv.DictReader(open(out))}
    assert set(rows) == {"000000000785.jpg", "000000040083.jpg", "000000196141.jpg", "blank.png"}  # nobody dropped
    for r in rows.values():
        assert r["prediction"] in ("ski", "baseball") and r["prediction_focus"] in ("ski", "baseball")
        assert len(r["top2"].split("|")) == 2 and len(r["top2_focus"].split("|")) == 2
    assert int(rows["000000196141.jpg"]["people"]) >= 3 and rows["000000196141.jpg"]["focused"] == "True"
    assert int(rows["000000000785.jpg"]["people"]) >= 1 and rows["000000000785.jpg"]["label"] == "ski"
    assert rows["blank.png"]["people"] == "0" and rows["blank.png"]["focused"] == "False"
    assert rows["blank.png"]["prediction_focus"] == rows["blank.png"]["prediction"]  # plain image both times
    assert "with focus (highlight, subject largest): top-1" in err and "people found in 3 of 4 photos" in err, err
    pngs = sorted(p.name for p in figs.iterdir())
    assert pngs == ["baseball__000000040083.png", "baseball__000000196141.png", "ski__000000000785.png", "ski__blank.png"]
    assert all(Image.open(figs / p).size[0] > 600 for p in pngs)


def test_focus_none_is_unchanged_and_flat_folder(photos):
    out = photos["root"] / "plain.csv"
    rc, err = zeroshot(photos["model"], photos["coco"], "--out", out, "--topk", "2")
    assert rc == 0 and list(csv.DictReader(open(out)))[0].keys() == {"image", "prediction", "top2", "label"}
    assert "with focus" not in err and "people found" not in err
    assert zeroshot(photos["model"], photos["coco"], "--figures", photos["root"] / "f")[0] == 2  # figures need the focus
    assert zeroshot(photos["model"], photos["coco"], "--focus", "pose", "--view", "sepia")[0] == 2
    out = photos["root"] / "mpii.csv"
    rc, err = zeroshot(photos["model"], photos["mpii"], "--classes", "running", "cooking", "--focus", "pose", "--subject", "all", "--out", out)
    rows = list(csv.DictReader(open(out)))
    assert rc == 0 and len(rows) == 5 and all(int(r["people"]) >= 1 and r["focused"] == "True" for r in rows), rows
    assert "label" not in rows[0] and "top-1" not in err


def test_subject_and_view_on_a_real_crowd(shared):
    from focusclip.data import load_rgb
    from focusclip.pose import estimate_people
    from focusclip.views import choose_subject, photo_view, subject_heatmap
    path = shared / "coco" / "000000197388.jpg"  # five people
    people, src, _ = estimate_people(path)
    assert len(people) >= 3
    largest, every = subject_heatmap(people, src, 64, "largest"), subject_heatmap(people, src, 64, "all")
    assert choose_subject(people, src, "all") == list(range(len(people))) and len(choose_subject(people, src)) == 1
    assert (every >= largest - 1e-6).all() and (every - largest).max() > 0.5  # the others add whole people
    img = load_rgb(path, 64)
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    v, focused = photo_view(img, largest, "highlight0")
    assert focused and torch.allclose(v, x * torch.from_numpy(largest), atol=1e-6)  # scaled by the heatmap, nothing else
    off = torch.from_numpy(largest == 0)
    assert off.any() and (v[:, off] == 0).all() and not (v[:, ~off] == 0).all()
    v, _ = photo_view(img, largest, "gray")
    core = torch.from_numpy(largest >= 1 - 1e-6)
    assert core.any() and torch.allclose(v[:, core], x[:, core], atol=1e-6)  # gray keeps the subject's core
    assert not np.allclose(v[:, off].numpy(), x[:, off].numpy())
