"The openai backend against a real local HTTP server (focusclip.testing.FakeLLM) with the real openai client."
import json
import socket
import time
from pathlib import Path

import pytest

from focusclip.data import MPII_JOINTS, Person, Record, load_descriptions, write_jsonl
from focusclip.describe import describe_params, describe_records, openai_jobs, run_describe
from focusclip.prompts import DescribeError, request_key
from focusclip.replies import ReplyCache
from focusclip.testing import FakeLLM

STANDING = [[90, 180], [90, 145], [90, 110], [110, 110], [110, 145], [110, 180], [100, 110], [100, 55],
            [100, 45], [100, 20], [78, 110], [80, 85], [85, 55], [115, 55], [120, 85], [122, 110]]


def records(n, prefix="r"):
    return [Record(f"{prefix}{i}", f"{i}.jpg", 200, 200, activity="running", category="sports",
                   people=[Person([[x + i % 7, y - i % 5] for x, y in STANDING], [1] * 16, center=[100, 100], scale=0.8)])
            for i in range(n)]


def params(srv, **kw):
    base = dict(backend="openai", base_url=srv.base_url, model="fake-llm", per_image=1, concurrency=4, backoff=0.01, backoff_max=0.05)
    return describe_params({}, **{**base, **kw})


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))


def test_concurrency_is_bounded_and_used(tmp_path):
    import openai  # noqa: F401  (imported before timing)
    with FakeLLM(latency=0.1) as srv:
        recs = records(24)
        t = time.perf_counter()
        res = describe_records(recs, cache=tmp_path / "c.jsonl", params=params(srv, concurrency=8), progress=False)
        dt = time.perf_counter() - t
        assert len(res.rows) == 24 and not res.failures
        assert srv.max_inflight == 8, srv.max_inflight  # never more than `concurrency`, and all of it used
        assert srv.requests == 24 and res.stats["requests"] == 24 and res.stats["retries"] == 0
        assert dt < 24 * 0.1 / 2, f"{dt:.2f}s: not concurrent"  # sequential would take 2.4 s, 8 at once 0.3 s
        assert res.stats["prompt_tokens"] > 24 * 100 and res.stats["completion_tokens"] > 24 * 50
        # each reply is the rules description of its own record
        assert all("running" in r["text"] and "standing" in r["text"] for r in res.rows)


def test_429_with_retry_after_and_500_are_retried(tmp_path):
    with FakeLLM(faults=["rate_limit", "rate_limit", "server_error", "server_error"], retry_after=0.3) as srv:
        t = time.perf_counter()
        res = describe_records(records(2), cache=tmp_path / "c.jsonl", params=params(srv, concurrency=1), progress=False)
        dt = time.perf_counter() - t
        assert len(res.rows) == 2 and not res.failures
        assert res.stats["requests"] == 6 and res.stats["retries"] == 4 and srv.requests == 6
        assert res.stats["errors"] == {"HTTP 429": 2, "HTTP 500": 2}
        assert dt >= 0.6, "Retry-After of the 429 replies was not honoured"
        assert len(ReplyCache(tmp_path / "c.jsonl")) == 2


def test_malformed_empty_and_dropped_are_retried(tmp_path):
    with FakeLLM(faults=["malformed", "empty", "drop"]) as srv:
        res = describe_records(records(1), cache=tmp_path / "c.jsonl", params=params(srv), progress=False)
        assert len(res.rows) == 1 and res.stats["retries"] == 3 and srv.fault_counts == {"malformed": 1, "empty": 1, "drop": 1}
        assert res.rows[0]["text"].startswith(("There is one person", "The image shows", "In this image"))


@pytest.mark.parametrize("fault,reason", [("malformed", "malformed reply"), ("empty", "malformed reply: empty reply"),
                                          ("server_error", "HTTP 500"), ("drop", "connection error")])
def test_persistent_fault_is_reported_not_kept(tmp_path, fault, reason):
    with FakeLLM(always=fault) as srv:
        res = describe_records(records(2), cache=tmp_path / "c.jsonl", params=params(srv, max_retries=2), progress=False)
        assert res.rows == [] and len(res.failures) == 2 and srv.requests == 6
        assert all(f["reason"].startswith(reason) for f in res.failures), res.failures
        assert not (tmp_path / "c.jsonl").exists() or (tmp_path / "c.jsonl").read_text() == ""


def test_failures_make_the_stage_fail_with_metrics_written(tmp_path):
    write_jsonl(records(3), tmp_path / "records.jsonl")
    with FakeLLM(always="malformed") as srv:
        kw = dict(records=str(tmp_path / "records.jsonl"), out_dir=str(tmp_path / "d"), metrics=str(tmp_path / "m.json"),
                  figure=str(tmp_path / "f.png"))
        with pytest.raises(DescribeError, match=r"3 of 3 descriptions failed \(openai backend, server http://127.0.0.1:\d+/v1\): r0#0: malformed reply"):
            run_describe({"describe": params(srv, max_retries=1)}, progress=False, **kw)
        m = json.loads((tmp_path / "m.json").read_text())
        assert (m["failures"], m["count"], m["requests"]) == (3, 0, 6)
        # a tolerated failure rate lets the stage finish
        srv.configure(always=None, faults=["malformed"])
        m = run_describe({"describe": params(srv, max_retries=0, max_failure_rate=0.5, concurrency=1)}, progress=False, **kw)
        assert (m["failures"], m["count"]) == (1, 2)


def test_server_down(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    p = describe_params({}, backend="openai", base_url=f"http://127.0.0.1:{port}/v1", per_image=2, max_retries=2, backoff=0.01)
    res = describe_records(records(3), cache=tmp_path / "c.jsonl", params=p, progress=False)
    assert res.rows == [] and len(res.failures) == 6 and res.stats["requests"] == 18
    assert all(f["reason"].startswith("connection error") for f in res.failures), res.failures[0]
    write_jsonl(records(3), tmp_path / "records.jsonl")
    with pytest.raises(DescribeError, match=rf"6 of 6 descriptions failed \(openai backend, server http://127.0.0.1:{port}/v1\): r0#0: connection error"):
        run_describe({"describe": p}, progress=False, records=str(tmp_path / "records.jsonl"), out_dir=str(tmp_path / "d"),
                     metrics=str(tmp_path / "m.json"), figure=str(tmp_path / "f.png"))
    assert json.loads((tmp_path / "m.json").read_text())["failures"] == 6


def test_request_budget(tmp_path):
    with FakeLLM(faults=["server_error"]) as srv:
        res = describe_records(records(5), cache=tmp_path / "c.jsonl", params=params(srv, max_requests=4, concurrency=1), progress=False)
        assert srv.requests == 4 and res.stats["requests"] == 4
        assert len(res.rows) == 3 and len(res.failures) == 2
        assert all("request budget exhausted (max_requests=4)" in f["reason"] for f in res.failures)
        # a rerun with a fresh budget requests only what is missing
        srv.reset_stats()
        res = describe_records(records(5), cache=tmp_path / "c.jsonl", params=params(srv, max_requests=4), progress=False)
        assert srv.requests == 2 and res.stats["cached"] == 3 and len(res.rows) == 5


def test_resume_requests_nothing_twice_and_keys_match_the_server(tmp_path):
    recs = records(6)
    with FakeLLM() as srv:
        p = params(srv, per_image=2)
        cache = ReplyCache(tmp_path / "c.jsonl")
        first = describe_records(recs[:3], cache=cache, params=p, progress=False)
        cache.close()
        assert srv.requests == 6
        # the server computes the same cache key from the request body it receives
        assert set(srv.by_key) == {j.key for j in openai_jobs(recs[:3], p)} == set(ReplyCache(tmp_path / "c.jsonl").entries)
        srv.reset_stats()
        res = describe_records(recs, cache=tmp_path / "c.jsonl", params=p, progress=False)
        assert srv.requests == 6 and res.stats["cached"] == 6 and len(res.rows) == 12
        assert not set(srv.by_key) & {j.key for j in openai_jobs(recs[:3], p)}
        assert [r["text"] for r in res.rows[:6]] == [r["text"] for r in first.rows]
        # the same prompt with another model, temperature or seed is another request
        keys = {j.key for j in openai_jobs(recs[:1], p)}
        for kw in (dict(model="other"), dict(temperature=0.7), dict(seed=1), dict(max_tokens=256)):
            assert not keys & {j.key for j in openai_jobs(recs[:1], {**p, **kw})}, kw
    lines = (tmp_path / "c.jsonl").read_text().splitlines()
    assert len(lines) == 12 and len({json.loads(l)["key"] for l in lines}) == 12


def test_key_from_environment_only(tmp_path, monkeypatch):
    with FakeLLM() as srv:
        remote = describe_params({}, backend="openai", base_url="https://llm.example.org/v1", per_image=1)
        with pytest.raises(DescribeError, match="OPENAI_API_KEY is not set"):
            describe_records(records(1), cache=tmp_path / "c.jsonl", params=remote, progress=False)
        # a loopback server works without a key (the documented `EMPTY` default) ...
        assert len(describe_records(records(1), params=params(srv), progress=False).rows) == 1
        # ... and a key in params is refused: there is no such parameter
        with pytest.raises(Exception, match="unknown key"):
            describe_params({"describe": {"api_key": "sk-x"}})


def test_request_carries_the_papers_settings(tmp_path):
    recs = records(1)
    p = describe_params({}, backend="openai", per_image=2)
    jobs = openai_jobs(recs, p)
    b = jobs[0].body
    assert (b["temperature"], b["max_tokens"], b["frequency_penalty"], b["model"]) == (0.5, 512, 1.0, "gpt-3.5-turbo")
    assert b["messages"][0]["role"] == "system" and json.loads(b["messages"][1]["content"])["activity"] == "sports, running"
    assert jobs[0].body["seed"] != jobs[1].body["seed"] and jobs[0].key == request_key("openai", b)


def test_timeouts_are_retried_then_reported(tmp_path):
    with FakeLLM(latency=0.4) as srv:
        res = describe_records(records(1), cache=tmp_path / "c.jsonl", params=params(srv, timeout=0.1, max_retries=1), progress=False)
        assert res.rows == [] and res.failures[0]["reason"] == "timeout" and res.stats["requests"] == 2
        assert res.stats["errors"] == {"timeout": 2}
        srv.configure(latency=0.0)
        res = describe_records(records(1), cache=tmp_path / "c.jsonl", params=params(srv, timeout=0.1, max_retries=1), progress=False)
        assert len(res.rows) == 1 and not res.failures
