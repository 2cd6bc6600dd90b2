"""Benchmark of the `openai` describe backend against the local OpenAI-compatible server.

500 prompts, 200 ms per request on the server: sequential (concurrency 1) vs concurrent (default 32),
then a resume check: a describe run in a subprocess is killed with SIGKILL midway and rerun; the
server's request counts show that nothing finished was requested again and nothing is duplicated.

    .venv/bin/python benchmarks/describe.py [--n 500] [--latency 0.2] [--concurrency 32]

The last line is `describe speedup: <ratio>x`.
"""
from __future__ import annotations
import argparse, json, os, random, signal, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from focusclip.data import Person, Record, load_descriptions, write_jsonl  # noqa: E402
from focusclip.describe import describe_params, describe_records  # noqa: E402
from focusclip.replies import ReplyCache  # noqa: E402

STANDING = [[90, 180], [90, 145], [90, 110], [110, 110], [110, 145], [110, 180], [100, 110], [100, 55],
            [100, 45], [100, 20], [78, 110], [80, 85], [85, 55], [115, 55], [120, 85], [122, 110]]


def make_records(n: int, seed: int = 0) -> list[Record]:
    "n records of one person with jittered joints."
    rng = random.Random(seed)
    acts = ["running", "dancing", "sitting on a chair", "playing tennis", "skiing"]
    return [Record(f"b{i:04d}", f"images/b{i:04d}.png", 200, 200, activity=acts[i % len(acts)], category="sports",
                   people=[Person([[x + rng.uniform(-12, 12), y + rng.uniform(-12, 12)] for x, y in STANDING], [1] * 16,
                                  center=[100, 100], scale=0.8)]) for i in range(n)]


def env() -> dict:
    e = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", HF_HUB_OFFLINE="1")
    e.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl"))
    return e


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    "The FakeLLM server in its own process (so that it does not share the client's interpreter)."
    proc = subprocess.Popen([sys.executable, "-m", "focusclip.testing", "--latency", str(latency)], stdout=subprocess.PIPE,
                            text=True, env=env())
    url = proc.stdout.readline().strip()
    if not url.startswith("http"): proc.kill(); raise RuntimeError(f"the FakeLLM server did not start: {url!r}")
    return proc, url


def server_stats(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url + "/_stats").read())


def timed_run(records, url, concurrency, cache_path) -> float:
    p = describe_params({}, backend="openai", base_url=url, model="fake-llm", per_image=1, concurrency=concurrency)
    t = time.perf_counter()
    res = describe_records(records, cache=cache_path, params=p, progress=False)
    dt = time.perf_counter() - t
    if res.failures or len(res.rows) != len(records): raise RuntimeError(f"{len(res.failures)} failures: {res.failures[:2]}")
    return dt


def resume_check(url: str, n: int, workdir: Path) -> dict:
    "Kill a describe run midway with SIGKILL, rerun it, and count what the server was asked."
    records = make_records(n, seed=1)
    write_jsonl(records, workdir / "records.jsonl")
    (workdir / "params.yaml").write_text(
        "describe:\n  backend: openai\n  model: fake-llm\n  per_image: 1\n  concurrency: 8\n"
        f"  base_url: {url}\n  records: records.jsonl\n  out_dir: desc\n  metrics: m.json\n  figure: f.png\n")
    cache = workdir / "desc" / "cache.jsonl"
    code = "from focusclip.describe import run_describe; run_describe('params.yaml', progress=False)"
    before = server_stats(url)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=workdir, env=env())
    while not (cache.exists() and sum(1 for _ in cache.open()) >= n // 2):
        if proc.poll() is not None: raise RuntimeError("the describe run ended before it could be killed")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    finished = set(ReplyCache(cache).entries)
    mid = server_stats(url)
    subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env(), check=True)
    after = server_stats(url)
    again = {k for k, v in after["by_key"].items() if v > mid["by_key"].get(k, 0)}
    rows = [json.loads(l) for l in (workdir / "desc" / "descriptions.jsonl").open()]
    keys = [json.loads(l)["key"] for l in cache.open()]
    return dict(prompts=n, finished_before_kill=len(finished),
                requests_first_run=mid["requests"] - before["requests"], requests_rerun=after["requests"] - mid["requests"],
                finished_requested_again=len(again & finished), descriptions=len(rows),
                lost=n - len(load_descriptions(workdir / "desc" / "descriptions.jsonl")),
                duplicated=len(rows) - len({(r["id"], r["n"]) for r in rows}) + len(keys) - len(set(keys)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--resume-n", type=int, default=200)
    a = ap.parse_args()
    proc, url = start_server(a.latency)
    try:
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            records = make_records(a.n)
            seq = timed_run(records, url, 1, d / "seq.jsonl")
            print(f"sequential (concurrency 1): {a.n} prompts in {seq:.2f} s ({a.n / seq:.1f} prompts/s)", flush=True)
            con = timed_run(records, url, a.concurrency, d / "con.jsonl")
            print(f"concurrent (concurrency {a.concurrency}): {a.n} prompts in {con:.2f} s ({a.n / con:.1f} prompts/s)", flush=True)
            (d / "resume").mkdir()
            r = resume_check(url, a.resume_n, d / "resume")
            print("resume check: " + ", ".join(f"{k}={v}" for k, v in r.items()), flush=True)
            ok = r["lost"] == 0 and r["duplicated"] == 0 and r["finished_requested_again"] == 0
            print(f"resume check: {'OK' if ok else 'FAILED'} (zero lost, zero duplicated, no finished prompt requested again)", flush=True)
            print(f"describe speedup: {seq / con:.1f}x")
    finally:
        proc.terminate(); proc.wait()


if __name__ == "__main__":
    main()
