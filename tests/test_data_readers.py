"Readers of focusclip.data on malformed input, and the resumable download, on small files in tmp_path."
import gzip, hashlib, json, socket, tarfile, zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from focusclip.download import MPII_ANNOTATION_FILE, DownloadError, download_file, download_mpii, extract_archive, verify_checksum
from focusclip.readers import MPII_CSV_JOINTS, read_coco, read_mpii_csv, read_mpii_h5, read_mpii_json, read_mpii_mat, read_records
from focusclip.data import N_JOINTS, RecordError
from focusclip.testing import RangeFileServer, struct_array, make_mini_mpii_mat

SHARED = Path(__file__).resolve().parents[1].parent/"shared"/"data"
HEADER = ",".join(["", "NAME", *[f"{j}_{a}" for j in MPII_CSV_JOINTS for a in "XY"], "Scale", "Activity", "Category"])


def csv_row(name, act="curling", cat="sports", scale="2.5"):
    xy = [v for j in range(N_JOINTS) for v in (100 + j, 200 + j)]
    return ",".join(map(str, [0, name, *xy, scale, f'"{act}"', cat]))


def write_csv(tmp_path, *rows, header=HEADER):
    p = tmp_path/"mpii.csv"
    p.write_text("\n".join([header, *rows]) + "\n")
    return p


# ---------------------------------------------------------------- CSV
def test_csv_reads_and_merges(tmp_path):
    p = write_csv(tmp_path, csv_row("a.jpg"), csv_row("b.jpg", act="[]", cat="[]"), csv_row("a.jpg"))
    recs = read_mpii_csv(p)
    assert [(r.id, len(r.people), r.activity, r.category) for r in recs] == [("a", 2, "curling", "sports"), ("b", 1, "", "")]
    assert recs[0].people[0].center == [(100 + 115) / 2, (200 + 215) / 2]
    assert recs[0].people[0].visible == [1] * 16


def test_csv_extra_field_names_file_and_row(tmp_path):
    p = write_csv(tmp_path, csv_row("a.jpg"), csv_row("b.jpg"), csv_row("c.jpg") + ",9")
    with pytest.raises(RecordError, match=r"mpii\.csv: row 3 \(line 4\): 38 fields, expected 37"): read_mpii_csv(p)


def test_csv_short_row(tmp_path):
    p = write_csv(tmp_path, csv_row("a.jpg").rsplit(",", 1)[0])
    with pytest.raises(RecordError, match=r"mpii\.csv: row 1 \(line 2\): 36 fields, expected 37"): read_mpii_csv(p)


def test_csv_non_numeric_coordinate(tmp_path):
    p = write_csv(tmp_path, csv_row("a.jpg"), csv_row("b.jpg").replace(",103,", ",x103,"))
    with pytest.raises(RecordError, match=r"mpii\.csv: row 2 \(line 3\): column 'l hip_X' is not a number: 'x103'"):
        read_mpii_csv(p)


def test_csv_empty_scale_and_bad_scale(tmp_path):
    p = write_csv(tmp_path, csv_row("a.jpg", scale=""))
    with pytest.raises(RecordError, match=r"row 1 \(line 2\): column 'Scale' is not a number: ''"): read_mpii_csv(p)
    p = write_csv(tmp_path, csv_row("a.jpg", scale="-1"))
    with pytest.raises(RecordError, match=r"mpii\.csv: rows \[1\] \(a\.jpg\): person 0 has invalid scale -1"): read_mpii_csv(p)


def test_csv_missing_column_and_empty_file(tmp_path):
    p = write_csv(tmp_path, csv_row("a.jpg").rsplit(",", 1)[0], header=HEADER.rsplit(",", 1)[0])
    with pytest.raises(RecordError, match=r"missing columns \['Category'\]"): read_mpii_csv(p)
    (tmp_path/"e.csv").write_text("")
    with pytest.raises(RecordError, match=r"e\.csv: empty CSV file"): read_mpii_csv(tmp_path/"e.csv")
    with pytest.raises(FileNotFoundError, match="nope.csv"): read_mpii_csv(tmp_path/"nope.csv")


def test_csv_conflicting_activity_for_one_image(tmp_path):
    p = write_csv(tmp_path, csv_row("a.jpg"), csv_row("b.jpg"), csv_row("a.jpg", act="golf"))
    with pytest.raises(RecordError, match=r"rows \[1, 3\] \(a\.jpg\): one image with different activities"): read_mpii_csv(p)


def test_csv_images_dir_sizes_and_missing_image(tmp_path):
    p = write_csv(tmp_path, csv_row("a.jpg"), csv_row("b.jpg"))
    (tmp_path/"img").mkdir(); Image.new("RGB", (320, 240)).save(tmp_path/"img/a.jpg")
    with pytest.raises(RecordError, match=r"image b\.jpg not found in"): read_mpii_csv(p, images_dir=tmp_path/"img")
    Image.new("RGB", (300, 200)).save(tmp_path/"img/b.jpg")
    assert [(r.width, r.height) for r in read_mpii_csv(p, images_dir=tmp_path/"img")] == [(320, 240), (300, 200)]


# ---------------------------------------------------------------- .mat
def release(**changes):
    "A valid two-image RELEASE dict; `changes` replace or (None) remove fields."
    E = np.zeros((0, 0))
    pts = struct_array([{"id": j, "x": 10.0 + j, "y": 20.0 + j, "is_visible": 1} for j in range(N_JOINTS)])
    rect = {"annopoints": {"point": pts}, "objpos": {"x": 30, "y": 40}, "scale": 1.5}
    rel = {"annolist": struct_array([{"image": {"name": "a.jpg"}, "annorect": rect}, {"image": {"name": "b.jpg"}, "annorect": E}]),
           "img_train": np.array([1, 0]),
           "act": struct_array([{"cat_name": "sports", "act_name": "golf", "act_id": 3}, {"cat_name": E, "act_name": E, "act_id": -1}]),
           "single_person": np.array([1, 0], dtype=object)}
    for k, v in changes.items():
        if v is None: rel.pop(k)
        else: rel[k] = v
    return rel


def write_mat(tmp_path, rel, name="RELEASE"):
    p = tmp_path/"anno.mat"
    savemat(str(p), {name: rel})
    return p


def test_mat_valid(tmp_path):
    recs = read_mpii_mat(write_mat(tmp_path, release()))
    assert [(r.id, r.split, r.activity, len(r.people)) for r in recs] == [("a", "train", "golf", 1), ("b", "test", "", 0)]
    assert recs[0].people[0].joints[15] == [25.0, 35.0]


def test_mat_mini_file(tmp_path):
    recs = read_records("mat", make_mini_mpii_mat(tmp_path/"m.mat"))
    assert sum(len(r.people) for r in recs) == 5
    assert sum(int(p.annotated.sum()) for r in recs for p in r.people) == (14 - 2) + 16 + 1  # two occluded joints in image 1


@pytest.mark.parametrize("field", ["annolist", "img_train", "act"])
def test_mat_missing_top_field(tmp_path, field):
    with pytest.raises(RecordError, match=rf"anno\.mat: RELEASE: missing field '{field}'"):
        read_mpii_mat(write_mat(tmp_path, release(**{field: None})))


def test_mat_missing_release_and_not_a_mat(tmp_path):
    with pytest.raises(RecordError, match=r"anno\.mat: no RELEASE struct \(found \['OTHER'\]\)"):
        read_mpii_mat(write_mat(tmp_path, release(), name="OTHER"))
    (tmp_path/"t.mat").write_text("not matlab")
    with pytest.raises(RecordError, match=r"t\.mat: not a readable MATLAB file"): read_mpii_mat(tmp_path/"t.mat")


def test_mat_length_mismatch(tmp_path):
    with pytest.raises(RecordError, match=r"RELEASE\.img_train has 3 entries but annolist has 2"):
        read_mpii_mat(write_mat(tmp_path, release(img_train=np.array([1, 0, 1]))))


def test_mat_duplicate_image_name(tmp_path):
    E = np.zeros((0, 0))
    al = struct_array([{"image": {"name": "a.jpg"}, "annorect": E}, {"image": {"name": "a.jpg"}, "annorect": E}])
    with pytest.raises(RecordError, match=r"image id 'a' appears twice \(annolist\(1\) a\.jpg and annolist\(2\) a\.jpg\)"):
        read_mpii_mat(write_mat(tmp_path, release(annolist=al)))


def test_mat_image_without_name(tmp_path):
    al = struct_array([{"image": {"file": "a.jpg"}, "annorect": np.zeros((0, 0))}] * 2)
    with pytest.raises(RecordError, match=r"annolist\(1\)\.image: missing field 'name'"):
        read_mpii_mat(write_mat(tmp_path, release(annolist=al)))


@pytest.mark.parametrize("point,msg", [({"id": 3, "y": 1.0, "is_visible": 1}, r"point\(1\): missing field 'x'"),
                                       ({"id": 16, "x": 1.0, "y": 1.0, "is_visible": 1}, r"point\(1\): joint id 16 outside 0\.\.15"),
                                       ({"id": 3, "x": 1.0, "y": 1.0, "is_visible": "maybe"}, r"point\(1\): is_visible is not 0/1: 'maybe'")])
def test_mat_bad_points(tmp_path, point, msg):
    rect = {"annopoints": {"point": point}, "objpos": {"x": 1, "y": 1}, "scale": 1.0}
    al = struct_array([{"image": {"name": "a.jpg"}, "annorect": rect}, {"image": {"name": "b.jpg"}, "annorect": np.zeros((0, 0))}])
    with pytest.raises(RecordError, match=r"anno\.mat: annolist\(1\)\.annorect\(1\)\.annopoints\." + msg):
        read_mpii_mat(write_mat(tmp_path, release(annolist=al)))


def test_mat_single_person_checks(tmp_path):
    p = write_mat(tmp_path, release(single_person=np.array([2, 0], dtype=object)))
    with pytest.raises(RecordError, match=r"annolist\(1\): single_person \[2\] outside 1\.\.1"): read_mpii_mat(p, people="single")
    with pytest.raises(ValueError, match="people must be"): read_mpii_mat(p, people="some")
    with pytest.raises(RecordError, match="missing field 'single_person'"):
        read_mpii_mat(write_mat(tmp_path, release(single_person=None)), people="single")


# ---------------------------------------------------------------- JSON, HDF5, COCO
def entry(image="a.jpg", **kw):
    e = {"image": image, "joints": [[10.0 + j, 20.0] for j in range(N_JOINTS)], "joints_vis": [1] * N_JOINTS,
         "center": [20.0, 30.0], "scale": 1.2}
    e.update(kw)
    return e


def test_json_valid_and_grouped(tmp_path):
    Image.new("RGB", (64, 32)).save(tmp_path/"a.jpg")
    (tmp_path/"m.json").write_text(json.dumps([entry(), entry(joints_vis=[0] + [1] * 15, joints=[[-1, -1]] + [[1, 2]] * 15)]))
    (r,) = read_mpii_json(tmp_path/"m.json", tmp_path)
    assert (r.width, r.height, len(r.people), r.people[1].joints[0], r.people[1].visible[0]) == (64, 32, 2, [-1.0, -1.0], 0)


@pytest.mark.parametrize("text,msg", [
    ('[{"image": "a.jpg",', r"m\.json: not valid JSON: line 1 column 20"),
    ('{"image": "a.jpg"}', r"m\.json: expected a list of people, got dict"),
    (json.dumps([entry(), {k: v for k, v in entry().items() if k != "scale"}]), r"m\.json: entry 1: missing fields \['scale'\]"),
    (json.dumps([entry(joints=[[1, 2]] * 15)]), r"m\.json: entry 0: expected joints \(16, 2\)"),
    (json.dumps([entry(center=["left", 3])]), r"m\.json: entry 0: non-numeric joints, center or scale"),
    (json.dumps([entry(image="gone.jpg")]), r"m\.json: image gone\.jpg not found in"),
    (json.dumps([entry(scale=0)]), r"m\.json: a\.jpg: person 0 has invalid scale 0"),
])
def test_json_malformed(tmp_path, text, msg):
    Image.new("RGB", (64, 32)).save(tmp_path/"a.jpg")
    (tmp_path/"m.json").write_text(text)
    with pytest.raises(RecordError, match=msg): read_mpii_json(tmp_path/"m.json", tmp_path)


def write_h5(path, n=3, drop=None, **over):
    import h5py
    d = {"imgname": np.array([b"a.jpg", b"b.jpg", b"a.jpg"][:n]), "part": np.ones((n, N_JOINTS, 2)) * 5,
         "visible": np.ones((n, N_JOINTS)), "center": np.ones((n, 2)), "scale": np.ones(n), "person": np.array([1, 0, 0][:n])}
    d["part"][0, 3] = 0; d["visible"][0, 3] = 0; d["part"][2, 4] = [7, 8]
    d.update(over)
    with h5py.File(path, "w") as f:
        for k, v in d.items():
            if k != drop: f[k] = v
    return path


def test_h5_groups_people(tmp_path):
    recs = read_mpii_h5(write_h5(tmp_path/"v.h5"))
    assert [(r.id, len(r.people), r.split) for r in recs] == [("a", 2, "val"), ("b", 1, "val")]
    first, second = recs[0].people  # ordered by `person`: row 2 (person 0) before row 0 (person 1)
    assert first.joints[4] == [7.0, 8.0] and second.joints[3] == [-1.0, -1.0] and second.visible[3] == 0


def test_h5_malformed(tmp_path):
    with pytest.raises(RecordError, match=r"v\.h5: missing datasets \['visible'\]"): read_mpii_h5(write_h5(tmp_path/"v.h5", drop="visible"))
    with pytest.raises(RecordError, match=r"w\.h5: part has shape \(3, 14, 2\), expected \(3, 16, 2\)"):
        read_mpii_h5(write_h5(tmp_path/"w.h5", part=np.ones((3, 14, 2))))
    (tmp_path/"x.h5").write_bytes(b"not hdf5")
    with pytest.raises(RecordError, match=r"x\.h5: not a readable HDF5 file"): read_mpii_h5(tmp_path/"x.h5")


def coco(**over):
    kp = [0] * 51; kp[15:21] = [10, 10, 2, 30, 10, 1]  # shoulders
    d = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 32}],
         "annotations": [{"image_id": 1, "category_id": 1, "keypoints": kp, "bbox": [0, 0, 40, 30], "num_keypoints": 2}],
         "categories": [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(17)]}]}
    d.update(over)
    return d


def test_coco_valid_and_malformed(tmp_path):
    p = tmp_path/"c.json"
    p.write_text(json.dumps(coco()))
    (r,) = read_coco(p)
    assert (r.width, r.height, r.people[0].joints[7], r.people[0].visible[7], r.people[0].scale) == (64, 32, [20.0, 10.0], 1, 0.15)
    p.write_text(json.dumps({"images": []}))
    with pytest.raises(RecordError, match=r"c\.json: not a COCO annotation file"): read_coco(p)
    bad = coco(); bad["annotations"][0]["keypoints"] = [1, 2, 2]
    p.write_text(json.dumps(bad))
    with pytest.raises(RecordError, match=r"c\.json: annotations\[0\]: 3 keypoint values, expected 51"): read_coco(p)
    bad = coco(); bad["annotations"][0]["image_id"] = 7
    p.write_text(json.dumps(bad))
    with pytest.raises(RecordError, match=r"image ids not in images: \[7\]"): read_coco(p)
    p.write_text(json.dumps(coco()))
    Image.new("RGB", (60, 32)).save(tmp_path/"a.jpg")
    with pytest.raises(RecordError, match=r"images\[0\]: a\.jpg is 60x32 but the annotations say 64x32"): read_coco(p, tmp_path)


def test_read_records_unknown_source():
    with pytest.raises(ValueError, match=r"unknown record source 'xml'; choose one of \['coco', 'csv', 'h5', 'json', 'jsonl', 'mat'\]"):
        read_records("xml", "a.xml")


# ---------------------------------------------------------------- download
@pytest.fixture
def blob(tmp_path):
    data = bytes(range(256)) * 300  # 76,800 bytes
    (tmp_path/"srv").mkdir()
    (tmp_path/"srv/f.bin").write_bytes(data)
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def test_download_resumes_after_a_cut(tmp_path, blob):
    data, sha = blob
    with RangeFileServer(tmp_path/"srv", cut_after=10000) as srv:
        with pytest.raises(DownloadError, match=r"could not download .*/f\.bin .*resumes from the 10000 bytes in"):
            download_file(f"{srv.url}/f.bin", tmp_path/"out/f.bin", retries=0, progress=False)
        assert (tmp_path/"out/f.bin.part").stat().st_size == 10000 and not (tmp_path/"out/f.bin").exists()
        out = download_file(f"{srv.url}/f.bin", tmp_path/"out/f.bin", checksum=sha, progress=False)
    assert out.read_bytes() == data and not (tmp_path/"out/f.bin.part").exists()
    assert srv.requests == [("/f.bin", None, 10000), ("/f.bin", "bytes=10000-", 66800)]


def test_download_retry_within_one_call(tmp_path, blob):
    data, sha = blob
    with RangeFileServer(tmp_path/"srv", cut_after=4096) as srv:
        assert download_file(f"{srv.url}/f.bin", tmp_path/"f.bin", checksum=sha, backoff=0, progress=False).read_bytes() == data
    assert [r[1:] for r in srv.requests] == [(None, 4096), ("bytes=4096-", 76800 - 4096)]


def test_download_server_without_range_restarts(tmp_path, blob):
    data, sha = blob
    (tmp_path/"f.bin.part").write_bytes(b"\xff" * 500)  # garbage that must not survive
    with RangeFileServer(tmp_path/"srv", ranges=False) as srv:
        assert download_file(f"{srv.url}/f.bin", tmp_path/"f.bin", checksum=sha, progress=False).read_bytes() == data
    assert srv.requests == [("/f.bin", "bytes=500-", 76800)]


def test_download_complete_part_gets_416(tmp_path, blob):
    data, sha = blob
    (tmp_path/"f.bin.part").write_bytes(data)
    with RangeFileServer(tmp_path/"srv") as srv:
        assert download_file(f"{srv.url}/f.bin", tmp_path/"f.bin", checksum=sha, progress=False).read_bytes() == data
    assert srv.requests == [("/f.bin", "bytes=76800-", 0)]


def test_download_checksum_mismatch_then_right_checksum(tmp_path, blob):
    data, sha = blob
    with RangeFileServer(tmp_path/"srv") as srv:
        with pytest.raises(DownloadError, match=r"f\.bin\.part: md5 checksum mismatch: expected 0{32}, got " + hashlib.md5(data).hexdigest()):
            download_file(f"{srv.url}/f.bin", tmp_path/"f.bin", checksum="md5:" + "0" * 32, progress=False)
        assert not (tmp_path/"f.bin.part").exists() and not (tmp_path/"f.bin").exists()
        download_file(f"{srv.url}/f.bin", tmp_path/"f.bin", checksum=sha, progress=False)
        with pytest.raises(DownloadError, match="checksum mismatch"):  # a finished file is checked again
            download_file(f"{srv.url}/f.bin", tmp_path/"f.bin", checksum="sha256:" + "1" * 64, progress=False)
    assert len(srv.requests) == 2
    with pytest.raises(ValueError, match="checksum must look like"): verify_checksum(tmp_path/"f.bin", "crc:zz")


def test_download_offline_and_404(tmp_path, blob):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mpii_human_pose_v1.tar.gz"
    with pytest.raises(DownloadError, match=rf"could not download {url} .* fetch the file by hand and put it at .*x\.tar\.gz"):
        download_file(url, tmp_path/"x.tar.gz", retries=1, backoff=0, progress=False)
    with RangeFileServer(tmp_path/"srv") as srv:
        with pytest.raises(DownloadError, match=r"/nothing\.bin: HTTP 404"):
            download_file(f"{srv.url}/nothing.bin", tmp_path/"n.bin", progress=False)


def test_extract_archive_damaged_and_download_mpii(tmp_path):
    (tmp_path/"bad.tar.gz").write_bytes(gzip.compress(b"x" * 1000)[:50])
    with pytest.raises(DownloadError, match=r"bad\.tar\.gz: "): extract_archive(tmp_path/"bad.tar.gz", tmp_path/"x")
    mirror = tmp_path/"mirror"; mirror.mkdir()
    with zipfile.ZipFile(mirror/"mpii_human_pose_v1_u12_2.zip", "w") as z: z.write(make_mini_mpii_mat(tmp_path/"m.mat"), MPII_ANNOTATION_FILE)
    with tarfile.open(mirror/"mpii_human_pose_v1.tar.gz", "w:gz") as t: t.add(tmp_path/"m.mat", arcname="other/m.mat")
    urls = {"annotations": "", "images": ""}
    with RangeFileServer(mirror) as srv:
        urls = {"annotations": f"{srv.url}/mpii_human_pose_v1_u12_2.zip", "images": f"{srv.url}/mpii_human_pose_v1.tar.gz"}
        got = download_mpii(tmp_path/"root", images=False, urls=urls, progress=False)
        assert got["annotations"] == tmp_path/"root"/MPII_ANNOTATION_FILE and "images" not in got
        assert len(read_mpii_mat(got["annotations"])) == 4
        with pytest.raises(DownloadError, match=r"mpii_human_pose_v1\.tar\.gz: unpacked into .* but .*images is not there"):
            download_mpii(tmp_path/"root", urls=urls, progress=False)


# ---------------------------------------------------------------- the real samples (skipped without ../shared/data)
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")


@needs_shared
def test_real_sample_counts():
    csv_recs = read_records("csv", SHARED/"mpii/mpii_dataset.csv")
    assert (len(csv_recs), sum(len(r.people) for r in csv_recs), sum(r.activity == "" for r in csv_recs)) == (17372, 17372, 41)
    h5 = read_records("h5", SHARED/"mpii/valid.h5")
    assert (len(h5), sum(len(r.people) for r in h5)) == (2729, 2958)
    js = read_records("json", SHARED/"mpii/test_mpii.json", images_dir=SHARED/"mpii/images")
    assert len(js) == 5
    co = read_records("coco", SHARED/"coco/test_coco.json", images_dir=SHARED/"coco")
    assert (len(co), sum(len(r.people) for r in co)) == (4, 12)
