"""Heatmap speed: the paper's full-frame, part-by-part reference against the fast NumPy and torch paths.

Same inputs for all: MPII-sized frames (1280x720 by default) with 1-4 random plausible people each.
Times the reference and the fast path frame by frame, in turn, checks that the outputs agree where
the reference is defined, and prints, last, `heatmaps speedup: <ratio>x` (fast NumPy over the
reference, both on the CPU, best of the repeats, in CPU time of this process, so that other
processes on a shared machine do not distort the ratio; wall times are printed beside).

    python benchmarks/heatmaps.py [--frames 8] [--repeats 30] [--width 1280 --height 720] [--threads 1]

All paths run single-threaded by default (`--threads`), so that the ratio compares algorithms, not
how many cores happen to be free.
"""
import argparse, os, sys, time

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=8, help="frames, with 1, 2, 3, 4, 1, 2, ... people")
    p.add_argument("--repeats", type=int, default=30, help="timed passes of the fast paths over all frames")
    p.add_argument("--ref-repeats", type=int, default=2, help="timed passes of the reference (slow) over all frames")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-5, help="largest allowed |fast - reference| where the reference is defined")
    return p.parse_args(argv)

def main(argv=None):
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"): os.environ[var] = str(args.threads)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import numpy as np
    from focusclip.heatmaps import heatmap, heatmap_reference, heatmaps_torch, random_people, part_ellipses
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError: torch = None

    W, H = args.width, args.height
    rng = np.random.default_rng(args.seed)
    frames = [random_people(rng, 1 + i % 4, W, H) for i in range(args.frames)]
    n_people = sum(len(f[0]) for f in frames)
    print(f"{args.frames} frames of {W}x{H}, {n_people} people, threads={args.threads}")

    def timed(fn, repeats):
        "Best (smallest) CPU seconds and wall seconds of `repeats` calls, and the last output."
        cpu, wall = [], []
        for _ in range(repeats):
            c0, w0 = time.process_time(), time.perf_counter(); out = fn()
            cpu.append(time.process_time() - c0); wall.append(time.perf_counter() - w0)
        return min(cpu), min(wall), out

    # frame by frame, the reference and the fast path in turn, so that a change in the machine's load hits both
    ref_c = ref_w = fast_c = fast_w = 0.0
    ref, fast = [], []
    for j, v, s in frames:
        heatmap(j, v, (W, H), scales=s)  # warm-up
        c, w, r = timed(lambda: heatmap_reference(j, v, W, H), args.ref_repeats); ref_c += c; ref_w += w; ref.append(r)
        c, w, f = timed(lambda: heatmap(j, v, (W, H), scales=s), args.repeats); fast_c += c; fast_w += w; fast.append(f)
    paper = [heatmap(j, v, (W, H), scales=s, zero_extent="paper") for j, v, s in frames]

    # agreement where the reference is defined: the same NaN pixels as the original with zero_extent='paper',
    # and equal values everywhere else; with the default fix, equal on frames without a zero semi-axis
    nan_same = all(np.array_equal(np.isnan(r), np.isnan(p)) for r, p in zip(ref, paper))
    d_paper = max(float(np.abs(np.nan_to_num(r) - np.nan_to_num(p)).max()) for r, p in zip(ref, paper))
    defined = [i for i, (j, v, s) in enumerate(frames)
               if (lambda e: (e["a"] > 0).all() and (e["b"] > 0).all())(part_ellipses(j, v, (W, H), s, zero_extent="paper"))]
    d_fast = max([float(np.abs(ref[i] - fast[i]).max()) for i in defined], default=0.0)

    rows = [("reference (NumPy, full frame, per part)", ref_c, ref_w, "-"), ("fast NumPy (separable, windowed)", fast_c, fast_w, f"{d_fast:.2e}")]
    d_torch = None
    if torch is not None:
        P = max(len(f[0]) for f in frames)
        J = np.full((len(frames), P, 16, 2), -1.0, np.float32); V = np.zeros((len(frames), P, 16), bool); S = np.full((len(frames), P), np.nan, np.float32)
        for i, (j, v, s) in enumerate(frames): J[i, :len(j)], V[i, :len(j)], S[i, :len(j)] = j, v > 0, s
        J, V, S = torch.from_numpy(J), torch.from_numpy(V), torch.from_numpy(S)
        torch_fn = lambda: heatmaps_torch(J, V, S, (W, H))
        torch_fn()
        torch_c, torch_w, out = timed(torch_fn, max(3, args.repeats // 3))
        d_torch = max(float(np.abs(ref[i] - out[i].numpy()).max()) for i in defined) if defined else 0.0
        rows.append((f"torch batched ({out.device.type}, B={len(frames)}, P={P})", torch_c, torch_w, f"{d_torch:.2e}"))

    n = len(frames)
    print(f"\n{'path':<44} {'CPU ms/frame':>13} {'wall ms/frame':>14} {'x ref (CPU)':>12} {'max |diff|':>11}")
    for name, c, w, d in rows: print(f"{name:<44} {c / n * 1000:>13.2f} {w / n * 1000:>14.2f} {ref_c / c:>12.1f} {d:>11}")
    print(f"\nagreement: {len(defined)}/{n} frames without a zero semi-axis, max |fast - reference| = {d_fast:.2e}"
          + (f", torch {d_torch:.2e}" if d_torch is not None else "")
          + f"; zero_extent='paper' on all frames: NaN pixels identical: {nan_same}, max |diff| elsewhere = {d_paper:.2e}")
    ok = nan_same and max(d_fast, d_paper, d_torch or 0.0) <= args.tol and len(defined) > 0
    print(f"agreement within {args.tol:g}: {'yes' if ok else 'NO'}")
    print(f"(times: the best of the repeats, CPU time of this process; wall ratio {ref_w / fast_w:.1f}x)")
    print(f"heatmaps speedup: {ref_c / fast_c:.1f}x")
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
