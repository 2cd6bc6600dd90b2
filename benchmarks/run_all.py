"""Run every benchmark in this folder and print one summary table.

Each benchmark prints its own figures, then a last line `<name>: <value>`; this script runs them
one after another (so they do not compete for cores), keeps their full output in
`results/benchmarks/<name>.log`, and ends with a table of the last lines against their targets.

    python benchmarks/run_all.py            # all
    python benchmarks/run_all.py heatmaps   # some
"""
import re, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {  # name -> (script, target as (comparison, value), what the figure is)
    "heatmaps": ("heatmaps.py", (">=", 100.0), "fast NumPy heatmaps over the paper's full-frame reference"),
    "synth": ("synth.py", ("<=", 40.0), "the embedded dataset at its default size (3,300 images), CPU seconds / workers"),
    "describe": ("describe.py", (">=", 20.0), "concurrent over sequential requests to an LLM server with 200 ms latency"),
    "train_step": ("train_step.py", ("<=", 1.05), "FocusCLIP step over floor (CLIP step + one extra highlighted-view pass)"),
    "zeroshot": ("zeroshot.py", (None, None), "zero-shot harness throughput, tiny model on CPU"),
    "gpu": ("gpu.py", (">=", 40.0), "MFU (%) of the paper's training step on a GPU, batch 256, bf16 (skips without CUDA)"),
}


def last_figure(out: str) -> tuple[str, float | None]:
    "The last `label: <number>` line of a benchmark's output."
    for line in reversed(out.strip().splitlines()):
        m = re.match(r"^(.+?):\s*([-+0-9.eE]+)x?\s*$", line.strip())
        if m: return m[1], float(m[2])
    return "", None


def run(name: str, log_dir: Path) -> dict:
    script, (cmp, target), what = BENCHMARKS[name]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(HERE / script)], capture_output=True, text=True, cwd=HERE.parent)
    secs = time.perf_counter() - t0
    (log_dir / f"{name}.log").write_text(r.stdout + r.stderr)
    label, value = last_figure(r.stdout)
    ok = None if value is None or cmp is None else (value >= target if cmp == ">=" else value <= target)
    return dict(name=name, label=label, value=value, target=f"{cmp} {target}" if cmp else "-", ok=ok, rc=r.returncode, secs=secs, what=what)


def main(names: list[str]) -> int:
    names = names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown: print(f"unknown benchmark(s) {unknown}; known: {list(BENCHMARKS)}", file=sys.stderr); return 2
    log_dir = HERE.parent / "results" / "benchmarks"; log_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in names:
        print(f"running {n} ...", flush=True)
        rows.append(run(n, log_dir))
    print(f"\n{'benchmark':12s} {'figure':34s} {'value':>10s} {'target':>9s} {'met':>5s} {'time':>7s}  what")
    for r in rows:
        v = "failed" if r["rc"] else ("-" if r["value"] is None else f"{r['value']:.2f}")
        met = "-" if r["ok"] is None else ("yes" if r["ok"] else "no")
        print(f"{r['name']:12s} {r['label'][:34]:34s} {v:>10s} {r['target']:>9s} {met:>5s} {r['secs']:6.0f}s  {r['what']}")
    print(f"\nfull outputs in {log_dir}")
    return 1 if any(r["rc"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
