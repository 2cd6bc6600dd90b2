"""Embedded dataset speed: the synthetic generator at its default size (3,300 images at 128 px, 2 workers).

Generates the dataset into a temporary folder and checks that every image and record is there. The
figure is CPU seconds (this process and its worker processes) divided by the number of workers:
about the wall time on free cores. A shared machine stretches wall time but not the work done, so
CPU time is the figure and wall time is printed beside it.

    .venv/bin/python benchmarks/synth.py [--n-train 2400 --n-val 300 --n-test 600] [--workers 2]

The last line is `synth seconds (CPU / workers): <s>`.
"""
from __future__ import annotations
import argparse, resource, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from focusclip.synth import SYNTH_DEFAULTS, generate  # noqa: E402


def cpu_seconds() -> float:
    "User + system CPU seconds of this process and of its finished children."
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for k in ("n_train", "n_val", "n_test", "workers"):
        ap.add_argument(f"--{k.replace('_', '-')}", type=int, default=SYNTH_DEFAULTS[k])
    a = ap.parse_args(argv)
    want = a.n_train + a.n_val + a.n_test
    with tempfile.TemporaryDirectory() as d:
        c0, t0 = cpu_seconds(), time.perf_counter()
        recs = generate(d, a.n_train, a.n_val, a.n_test, workers=a.workers, progress=False)
        cpu, wall = cpu_seconds() - c0, time.perf_counter() - t0
        images = len(list((Path(d)/"images").glob("*.png")))
    ok = len(recs) == images == want
    print(f"{want} images wanted: {len(recs)} records, {images} image files ({'all there' if ok else 'MISSING'})")
    print(f"{wall:.1f} s wall, {cpu:.1f} CPU s with {a.workers} workers")
    print(f"synth seconds (CPU / workers): {cpu / a.workers:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
