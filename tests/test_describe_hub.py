"The hub backend on small local datasets of the released dataset's shape (one configuration per LLM, train/validation)."
import json

import pytest

from focusclip.data import Person, Record, load_descriptions, write_jsonl
from focusclip.describe import describe_params, describe_records, run_describe
from focusclip.prompts import DescribeError
from focusclip.testing import caption_rows, make_pose_captions


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1"); monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf")); monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    import datasets
    datasets.disable_progress_bars()


POSE = [Person([[600, 100 + 20 * j] for j in range(16)], [1] * 16, [600, 260], 1.6)]


def recs(n):
    "MPII records with an annotated pose: the released captions describe those."
    return [Record(f"mpii_{i}", f"images/{i:09d}.jpg", 1280, 720, split="train" if i < 4 else "val", people=POSE) for i in range(n)]


def test_save_to_disk_configs_and_splits(tmp_path):
    import datasets
    root = tmp_path / "captions"
    for cfg in ("gpt-4", "llama-2"):
        dd = datasets.DatasetDict(train=datasets.Dataset.from_list(caption_rows([f"{i:09d}.jpg" for i in range(4)] + ["999999999.jpg"], cfg)),
                                  validation=datasets.Dataset.from_list(caption_rows([f"{i:09d}.jpg" for i in (4, 5)], cfg)))
        dd.save_to_disk(str(root / cfg))
    r = recs(7)  # mpii_6 has no description anywhere
    res = describe_records(r, "hub", hub_dataset=str(root), hub_config="gpt-4,llama-2", per_image=3)
    got = {}
    for row in res.rows: got.setdefault(row["id"], []).append((row["n"], row["model"], row["text"]))
    assert got["mpii_0"] == [(0, "gpt-4", "gpt-4 description of 000000000.jpg"), (1, "llama-2", "llama-2 description of 000000000.jpg")]
    assert got["mpii_5"][0][2] == "gpt-4 description of 000000005.jpg"  # validation split joined too
    assert len(res.rows) == 12 and {r["backend"] for r in res.rows} == {"hub"}
    # nothing silently dropped: the unmatched hub rows and the records without a description are counted
    assert res.stats["hub_rows"] == 14 and res.stats["hub_unmatched_rows"] == 2
    assert res.stats["records_without_description"] == 1 and res.failures[0]["id"] == "mpii_6"
    assert "000000006.jpg" in res.failures[0]["reason"]
    assert sorted(res.stats["splits_loaded"]) == ["gpt-4/train", "gpt-4/validation", "llama-2/train", "llama-2/validation"]
    one = describe_records(r, "hub", hub_dataset=str(root), hub_config="gpt-4,llama-2", per_image=1)
    assert len(one.rows) == 6 and {x["model"] for x in one.rows} == {"gpt-4"}


def test_json_files_and_custom_columns(tmp_path):
    root = tmp_path / "captions"
    (root / "gpt-3.5-turbo").mkdir(parents=True)
    # a JSON list file, as in the released repository (<model>/train.json, <model>/val.json)
    data = [dict(img=f"{i:09d}.jpg", caption=f"caption {i}") for i in range(3)] + [dict(img="000000001.jpg", caption="  ")]
    (root / "gpt-3.5-turbo" / "train.json").write_text(json.dumps(data))
    (root / "gpt-3.5-turbo" / "val.json").write_text(json.dumps([dict(img="000000003.jpg", caption="caption 3")]))
    p = describe_params({}, backend="hub", hub_dataset=str(root), hub_config="gpt-3.5-turbo", hub_image_column="img", hub_text_column="caption")
    res = describe_records(recs(4), params=p)
    assert [(r["id"], r["text"]) for r in res.rows] == [("mpii_0", "caption 0"), ("mpii_1", "caption 1"), ("mpii_2", "caption 2"), ("mpii_3", "caption 3")]
    assert res.stats["hub_empty_rows"] == 1 and not res.failures
    with pytest.raises(DescribeError, match=r"gpt-3.5-turbo/train\): no column 'image'; columns are \['img', 'caption'\]"):
        describe_records(recs(4), "hub", hub_dataset=str(root), hub_config="gpt-3.5-turbo")
    with pytest.raises(DescribeError, match="none of the splits"):
        describe_records(recs(4), "hub", hub_dataset=str(root), hub_config="gpt-4")


def test_hub_stage_reports_missing(tmp_path):
    import datasets
    root = tmp_path / "captions"
    datasets.DatasetDict(train=datasets.Dataset.from_list(caption_rows(["000000000.jpg", "000000001.jpg", "555.jpg"], "g"))).save_to_disk(str(root / "gpt-4"))
    write_jsonl(recs(3), tmp_path / "records.jsonl")
    kw = dict(records=str(tmp_path / "records.jsonl"), out_dir=str(tmp_path / "d"), metrics=str(tmp_path / "m.json"), figure=str(tmp_path / "f.png"))
    params = {"describe": {"backend": "hub", "hub_dataset": str(root), "max_failure_rate": 0.5}}
    m = run_describe(params, progress=False, **kw)
    assert (m["count"], m["failures"], m["hub_unmatched_rows"], m["records_without_description"]) == (2, 1, 1, 1)
    assert list(load_descriptions(tmp_path / "d" / "descriptions.jsonl")) == ["mpii_0", "mpii_1"]
    with pytest.raises(DescribeError, match=r"1 of 3 descriptions failed \(hub backend\): mpii_2#0: no description for image '000000002.jpg'"):
        run_describe({"describe": {**params["describe"], "max_failure_rate": 0.0}}, progress=False, **kw)


def test_records_without_a_pose_are_no_failures(tmp_path):
    "MPII's test images (people without joints) and images of nobody: the release describes neither, and the stage passes."
    root = make_pose_captions(tmp_path / "captions", ["000000000.jpg"], ["000000005.jpg"])
    unposed = [Record("mpii_7", "images/000000007.jpg", 1280, 720, split="test", people=[Person([[-1, -1]] * 16, [0] * 16, [600, 300], 2.0)]),
               Record("mpii_8", "images/000000008.jpg", 1280, 720)]
    write_jsonl(recs(1) + unposed, tmp_path / "records.jsonl")
    kw = dict(records=str(tmp_path / "records.jsonl"), out_dir=str(tmp_path / "d"), metrics=str(tmp_path / "m.json"), figure=str(tmp_path / "f.png"))
    m = run_describe({"describe": {"backend": "hub", "hub_dataset": str(root)}}, progress=False, **kw)
    assert (m["count"], m["failures"], m["records_without_pose"], m["records_without_description"]) == (1, 0, 2, 0)


def test_hub_id_offline_is_a_clear_error(tmp_path):
    "The released dataset by its Hub id: offline (as here) the error names the dataset, configuration and split."
    with pytest.raises(DescribeError, match=r"saifkhichi96/mpii-human-pose-captions \(gpt-4/train\): could not load the dataset"):
        describe_records(recs(2), "hub")


def test_dataset_card_configs_report_which_llm_wrote_each_split(tmp_path, caplog):
    "A folder shaped like the released repository: its card builds gpt-4's validation split from the gpt-3.5-turbo file."
    root = make_pose_captions(tmp_path / "mpii-human-pose-captions", [f"{i:09d}.jpg" for i in range(4)], [f"{i:09d}.jpg" for i in (4, 5)])
    with caplog.at_level("WARNING", logger="focusclip.describe"):
        res = describe_records(recs(6), "hub", hub_dataset=str(root), hub_config="gpt-4", per_image=1)
    assert res.stats["caption_llm"] == {"gpt-4/train": "gpt-4", "gpt-4/validation": "gpt-3.5-turbo"}
    by_id = {r["id"]: r for r in res.rows}
    assert by_id["mpii_0"]["model"] == "gpt-4" and by_id["mpii_4"]["model"] == "gpt-3.5-turbo"
    assert by_id["mpii_4"]["text"] == "gpt-3.5-turbo description of 000000004.jpg"
    assert "'gpt-4': its validation split holds captions written by gpt-3.5-turbo" in caplog.text


def test_local_folders_of_the_same_name_are_read_anew(tmp_path):
    "Two local copies named alike give each its own rows (`datasets` alone would serve the second from the first's cache)."
    from focusclip.data import Record
    from focusclip.describe import describe_records
    recs = [Record("a", "images/000000001.jpg", 8, 8), Record("b", "images/000000002.jpg", 8, 8, split="val")]
    for i, (train, val) in enumerate([(["000000009.jpg"], ["000000008.jpg"]), (["000000001.jpg"], ["000000002.jpg"])]):
        root = make_pose_captions(tmp_path / f"copy{i}" / "captions", train, val)
        res = describe_records(recs, "hub", hub_dataset=str(root), hub_config="gpt-4", progress=False)
    assert [(r["id"], r["model"]) for r in res.rows] == [("a", "gpt-4"), ("b", "gpt-3.5-turbo")]
