"Kill -9 a describe run midway and rerun it: zero lost, zero duplicated, nothing finished requested again."
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from focusclip.data import Person, Record, load_descriptions, write_jsonl
from focusclip.describe import openai_jobs, describe_params
from focusclip.replies import ReplyCache
from focusclip.testing import FakeLLM

ROOT = Path(__file__).resolve().parents[1]
STANDING = [[90, 180], [90, 145], [90, 110], [110, 110], [110, 145], [110, 180], [100, 110], [100, 55],
            [100, 45], [100, 20], [78, 110], [80, 85], [85, 55], [115, 55], [120, 85], [122, 110]]
CODE = "from focusclip.describe import run_describe; run_describe('params.yaml', progress=False)"


def env(tmp_path):
    return dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", MPLCONFIGDIR=str(tmp_path / "mpl"),
                HF_HUB_OFFLINE="1", OPENAI_API_KEY="")


@pytest.mark.slow
def test_kill9_and_resume(tmp_path):
    n_rec, per_image = 30, 2
    recs = [Record(f"k{i:03d}", f"k{i}.png", 200, 200, activity="skiing",
                   people=[Person([[x + i % 9, y + i % 4] for x, y in STANDING], [1] * 16, center=[100, 100], scale=0.8)])
            for i in range(n_rec)]
    write_jsonl(recs, tmp_path / "records.jsonl")
    total = n_rec * per_image
    with FakeLLM(latency=0.15, fault_rates={"rate_limit": 0.05, "server_error": 0.05}, retry_after=0.05, seed=3) as srv:
        (tmp_path / "params.yaml").write_text(
            "describe:\n  backend: openai\n  model: fake-llm\n  concurrency: 4\n  backoff: 0.02\n"
            f"  per_image: {per_image}\n  base_url: {srv.base_url}\n  records: records.jsonl\n  out_dir: out\n"
            "  metrics: metrics.json\n  figure: lengths.png\n")
        cache = tmp_path / "out" / "cache.jsonl"
        proc = subprocess.Popen([sys.executable, "-c", CODE], cwd=tmp_path, env=env(tmp_path))
        deadline = time.time() + 60
        while not (cache.exists() and cache.read_text().count("\n") >= total // 3):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no progress"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert not (tmp_path / "out" / "descriptions.jsonl").exists()  # killed before the end
        finished = set(ReplyCache(cache).entries)
        assert total // 3 <= len(finished) < total
        before = dict(srv.by_key)
        srv.reset_stats()
        r = subprocess.run([sys.executable, "-c", CODE], cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        # nothing that had finished was requested again; everything else was
        assert not set(srv.by_key) & finished
        p = describe_params({"describe": {"model": "fake-llm", "per_image": per_image}}, backend="openai")
        all_keys = {j.key for j in openai_jobs(recs, p)}
        assert set(srv.by_key) | finished == all_keys
        assert set(before) >= finished
    # zero lost, zero duplicated
    rows = [json.loads(l) for l in (tmp_path / "out" / "descriptions.jsonl").read_text().splitlines()]
    assert len(rows) == total and len({(r["id"], r["n"]) for r in rows}) == total
    assert {r["id"] for r in rows} == {r.id for r in recs}
    lines = cache.read_text().splitlines()
    keys = [json.loads(l)["key"] for l in lines]  # every line whole
    assert len(keys) == len(set(keys)) == total
    d = load_descriptions(tmp_path / "out" / "descriptions.jsonl")
    assert all(len(v) == per_image for v in d.values())
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert (m["count"], m["failures"], m["cached"]) == (total, 0, len(finished))
