"""Zero-shot harness speed on the CPU: images per second for the `tiny` model (random weights).

Writes N synthetic PNG images (the embedded dataset's size, 96 px) to a temporary folder and runs the
whole harness on them: the text classifier for 12 classes x 3 templates, image reading (PIL -> RGB ->
resize to the model's input), batched encoding, and the metrics with 1,000 bootstrap resamples. The
first, untimed pass warms up; then the best of `--repeats` timed passes is reported, with the split of
the time between encoding and the rest.

    .venv/bin/python benchmarks/zeroshot.py [--n 512] [--batch-size 128] [--repeats 2] [--threads 2]

The last line is `zeroshot images/s: <n>`.
"""
from __future__ import annotations
import argparse, os, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="images")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--bootstrap", type=int, default=1000)
    a = ap.parse_args(argv)
    import numpy as np, torch
    from PIL import Image
    from focusclip.model import create_model
    from focusclip.evalsets import EvalSet
    from focusclip.zeroshot import evaluate_zero_shot, encode_images
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    classes = ["standing", "walking", "running", "doing jumping jacks", "sitting", "lying down",
               "squatting", "kicking", "waving", "pointing", "bending over", "cycling"]
    model = create_model("tiny").eval()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        items = []
        for i in range(a.n):
            p = Path(d) / f"{i:05d}.png"
            Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(p); items.append(p)
        es = EvalSet("bench", "activity", classes, items, rng.integers(0, len(classes), a.n).tolist())
        evaluate_zero_shot(model, EvalSet("warm", "activity", classes, items[:a.batch_size], es.labels[:a.batch_size]),
                           batch_size=a.batch_size, bootstrap=10, progress=False)
        best, best_enc = float("inf"), float("inf")
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            r = evaluate_zero_shot(model, es, batch_size=a.batch_size, bootstrap=a.bootstrap, progress=False)
            best = min(best, time.perf_counter() - t0)
            t0 = time.perf_counter(); encode_images(model, es, batch_size=a.batch_size, progress=False)
            best_enc = min(best_enc, time.perf_counter() - t0)
    print(f"model tiny ({model.image_size} px), {a.n} images, batch {a.batch_size}, {a.threads} torch threads, "
          f"{a.bootstrap} bootstrap resamples")
    print(f"whole harness: {best:.2f} s (image reading + encoding alone: {best_enc:.2f} s); top-3 {r['topk']:.1f}% "
          f"(random weights; chance {r['chance_topk']:.1f}%)")
    print(f"zeroshot images/s: {a.n / best:.1f}")


if __name__ == "__main__":
    main()
