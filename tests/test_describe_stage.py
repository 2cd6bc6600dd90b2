"The describe stage notebook under papermill, offline (rules) and against the local server (openai); no API key in any output."
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from focusclip.data import MPII_JOINTS, Person, Record, load_descriptions, write_jsonl
from focusclip.describe import DESCRIBE_DEFAULTS, describe_params, run_describe
from focusclip.testing import FakeLLM

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "sk-focusclip-FAKE-KEY-4f9c2e7b1d"  # recognisable: must not appear in any output
STANDING = [[90, 180], [90, 145], [90, 110], [110, 110], [110, 145], [110, 180], [100, 110], [100, 55],
            [100, 45], [100, 20], [78, 110], [80, 85], [85, 55], [115, 55], [120, 85], [122, 110]]


def make_workdir(tmp_path, n=4, **describe):
    recs = [Record(f"s{i}", f"images/s{i}.png", 200, 200, split="train", activity="dancing", category="music",
                   people=[Person([[x + i, y] for x, y in STANDING], [1] * 16, center=[100, 100], scale=0.8)]) for i in range(n)]
    write_jsonl(recs, tmp_path / "data" / "records" / "records.jsonl")
    lines = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in describe.items())
    (tmp_path / "params.yaml").write_text("base:\n  seed: 42\ndescribe:\n" + lines)
    return recs


@pytest.fixture
def kernel_env(monkeypatch, tmp_path):
    "Environment for the papermill kernel: the package importable, caches in tmp, offline, the fake key set."
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    for k, d in (("MPLCONFIGDIR", "mpl"), ("IPYTHONDIR", "ipython"), ("XDG_CACHE_HOME", "xdg"), ("HF_HOME", "hf"),
                 ("JUPYTER_RUNTIME_DIR", "jrt"), ("JUPYTER_DATA_DIR", "jdata")):
        monkeypatch.setenv(k, str(tmp_path / "_env" / d))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)


def papermill(workdir: Path, out: Path):
    "Run the stage as DVC does (papermill CLI, -k python3, the package engine); returns the combined log."
    cmd = [sys.executable, "-m", "papermill", "-k", "python3", "--engine", "focusclip", str(ROOT / "stages" / "describe.ipynb"), str(out),
           "-p", "params_path", "params.yaml", "--cwd", str(workdir)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    return log


def all_text(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file() and "_env" not in p.parts)


@pytest.mark.slow
def test_stage_openai_against_local_server_leaks_no_key(tmp_path, kernel_env):
    with FakeLLM(latency=0.02, faults=["rate_limit", "server_error"], require_key=FAKE_KEY) as srv:
        make_workdir(tmp_path, n=4, backend="openai", base_url=srv.base_url, model="fake-llm", per_image=2, concurrency=4, backoff=0.01)
        out = tmp_path / "results" / "notebooks" / "describe.ipynb"
        out.parent.mkdir(parents=True)
        log = papermill(tmp_path, out)
        # the key reached the server (it answers 401 otherwise) ...
        assert len(srv.served_keys) == 8 and srv.requests == 10
    # ... and appears nowhere: descriptions, cache, metrics, figure, executed notebook, papermill's log
    d = load_descriptions(tmp_path / "data" / "descriptions" / "descriptions.jsonl")
    assert list(d) == [f"s{i}" for i in range(4)] and all(len(v) == 2 for v in d.values())
    m = json.loads((tmp_path / "results" / "metrics" / "describe.json").read_text())
    assert (m["count"], m["failures"], m["requests"], m["retries"], m["backend"], m["model"]) == (8, 0, 10, 2, "openai", "fake-llm")
    assert m["total_tokens"] > 0 and m["cost_usd"] == 0 and "no price" in m["cost_note"]
    assert (tmp_path / "results" / "figures" / "describe_lengths.png").stat().st_size > 5000
    nb = json.loads(out.read_text())
    assert any("parameters" in c["metadata"].get("tags", []) for c in nb["cells"])
    assert len((tmp_path / "data" / "descriptions" / "cache.jsonl").read_text().splitlines()) == 8
    text = all_text(tmp_path) + log
    assert "dancing" in text  # the scan does read the outputs
    assert FAKE_KEY not in text and "4f9c2e7b1d" not in text
    assert FAKE_KEY not in (ROOT / "params.yaml").read_text()


def test_wrong_key_echoed_by_server_is_redacted(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY); monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    make_workdir(tmp_path, n=2)
    with FakeLLM(require_key="sk-the-right-one-0000") as srv, caplog.at_level(logging.DEBUG):
        p = {"describe": {"backend": "openai", "base_url": srv.base_url, "per_image": 1, "max_failure_rate": 1.0,
                          "records": str(tmp_path / "data/records/records.jsonl"), "out_dir": str(tmp_path / "d"),
                          "metrics": str(tmp_path / "m.json"), "figure": str(tmp_path / "f.png")}}
        m = run_describe(p, progress=False)
        assert srv.requests == 2  # a 401 is not retried
    assert m["failures"] == 2 and m["failure_examples"][0].startswith("s0#0: HTTP 401")
    text = all_text(tmp_path) + caplog.text
    assert "Incorrect API key provided" in text and FAKE_KEY not in text and "4f9c2e7b1d" not in text


@pytest.mark.slow
def test_stage_rules_offline_with_repo_params(tmp_path, kernel_env):
    "The default (rules) stage with the repository's own describe section, paths redirected into tmp."
    p = describe_params(ROOT / "params.yaml")
    assert p["backend"] == "rules" and set(p) == set(DESCRIBE_DEFAULTS)
    make_workdir(tmp_path, n=3, per_image=p["per_image"])
    out = tmp_path / "describe_out.ipynb"
    papermill(tmp_path, out)
    d = load_descriptions(tmp_path / "data" / "descriptions" / "descriptions.jsonl")
    assert len(d) == 3 and all(len(v) == p["per_image"] and len(set(v)) == len(v) for v in d.values())
    assert all(t.startswith(("There is one person", "The image shows one person", "In this image, one person")) for v in d.values() for t in v)
    m = json.loads((tmp_path / "results" / "metrics" / "describe.json").read_text())
    assert (m["backend"], m["model"], m["count"], m["requests"], m["failures"]) == ("rules", "rules_v1", 3 * p["per_image"], 0, 0)
    first = (tmp_path / "data" / "descriptions" / "descriptions.jsonl").read_text()
    os.chdir(tmp_path)  # a rerun (in-process, as the stage does) gives the same file
    try: run_describe("params.yaml", progress=False)
    finally: os.chdir(ROOT)
    assert (tmp_path / "data" / "descriptions" / "descriptions.jsonl").read_text() == first
