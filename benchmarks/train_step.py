"""Time CLIP and FocusCLIP training steps on the same model configuration and batch, in one run.

Both variants train on the same small stick-figure set (written to a temporary folder) through the
training data path (`PoseTextDataset` + `collate`), with the same optimiser. For every step the
time to get the batch ready (loader, tokenizer, heatmaps) is measured apart from the compute
(forward, loss, backward, clipping, optimiser step). Warm-up steps are excluded; the variants
alternate step by step (which goes first alternates too) so that a busy machine slows both alike;
the median over all timed steps is reported, the fastest step beside it. The last line is
`focusclip/clip step ratio: <r>` (median compute time per step).

    python benchmarks/train_step.py                       # tiny config, batch 64 at 64 px, CPU
    python benchmarks/train_step.py --config paper --pretrained towers --batch 32 --device cuda
"""
import argparse, os, statistics, sys, tempfile, time
from pathlib import Path


def _sync(device):
    import torch
    if str(device).startswith("cuda"): torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="tiny", help="model configuration (tiny | minilm | paper | an open_clip name)")
    ap.add_argument("--pretrained", default="", help="model.pretrained ('' from scratch)")
    ap.add_argument("--batch", type=int, default=64, help="images per step")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per variant (the variants alternate step by step)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    ap.add_argument("--heatmaps", default="precomputed", choices=("precomputed", "on_the_fly"))
    ap.add_argument("--separate-encoder", action="store_true", help="model.shared_encoder: false")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = ap.parse_args(argv)

    import torch
    from contextlib import nullcontext
    from torch.utils.data import DataLoader
    from focusclip.config import get_device, seed_everything
    from focusclip.data import read_jsonl
    from focusclip.model import create_model_from_params
    from focusclip.losses import FocusCLIPLoss
    from focusclip.train import (PoseTextDataset, ShardSampler, collate, toy_records, train_config, make_optimizer,
                                 batch_heatmaps, train_step)
    if a.threads: torch.set_num_threads(a.threads)
    device = get_device(a.device)
    precision = a.precision if a.precision != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
    autocast = (lambda: torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
    cfg = dict(train_config({}), total_steps=10_000)

    models = {}
    for variant in ("clip", "focusclip"):
        seed_everything(0)
        models[variant] = create_model_from_params(dict(config=a.config, pretrained=a.pretrained, shared_encoder=not a.separate_encoder),
                                                   use_heatmap=variant == "focusclip").to(device)
    size = models["clip"].image_size
    size = size if isinstance(size, int) else size[0]
    tmp = Path(tempfile.mkdtemp(prefix="train-step-"))
    rpath = toy_records(tmp, n_train=2 * a.batch, n_val=0, size=size, heatmaps=a.heatmaps == "precomputed", descriptions=True)
    recs = read_jsonl(rpath, "train")
    from focusclip.describe import load_descriptions
    texts = load_descriptions(tmp/"descriptions.jsonl")

    state = {}
    for variant, model in models.items():
        heat = a.heatmaps if variant == "focusclip" else None
        ds = PoseTextDataset(recs, tmp, size, heat, tmp/"heatmaps", texts, seed=0, cache=True)
        loader = DataLoader(ds, batch_size=a.batch, sampler=ShardSampler(len(ds), seed=0), collate_fn=collate, drop_last=True)
        opt, sched = make_optimizer(model, cfg)
        loss = FocusCLIPLoss(cfg["loss"], cfg["temperature"], cfg["weights"], use_heatmap=variant == "focusclip")
        state[variant] = dict(model=model, loader=loader, it=iter(loader), opt=opt, sched=sched, loss=loss, epoch=0, ds=ds)

    def one_step(v):
        s = state[v]
        t0 = time.perf_counter()
        try: batch = next(s["it"])
        except StopIteration:
            s["epoch"] += 1; s["loader"].sampler.set_epoch(s["epoch"]); s["ds"].set_epoch(s["epoch"])
            s["it"] = iter(s["loader"]); batch = next(s["it"])
        tokens = s["model"].tokenizer(batch["text"])
        hm = batch_heatmaps(batch, size, device) if v == "focusclip" else None
        _sync(device); t1 = time.perf_counter()
        train_step(s["model"], s["loss"], s["opt"], s["sched"], batch, tokens, hm, device, autocast, cfg["grad_clip"])
        _sync(device); t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    for v in state:
        for _ in range(a.warmup): one_step(v)
    times = {v: dict(data=[], compute=[]) for v in state}
    for i in range(a.steps):
        for v in (("clip", "focusclip") if i % 2 == 0 else ("focusclip", "clip")):
            d, c = one_step(v)
            times[v]["data"].append(d); times[v]["compute"].append(c)
    med = {v: {k: statistics.median(x) for k, x in t.items()} for v, t in times.items()}
    fastest = {v: min(t["compute"]) for v, t in times.items()}
    print(f"config {a.config}, batch {a.batch} at {size}px, {device} ({precision}), heatmaps {a.heatmaps}, "
          f"{'separate' if a.separate_encoder else 'shared'} encoder, torch threads {torch.get_num_threads()}, "
          f"{a.steps} timed steps per variant after {a.warmup} warm-up")
    for v, m in med.items():
        print(f"{v:>9}: compute {m['compute'] * 1e3:8.1f} ms/step ({a.batch / m['compute']:7.1f} images/s; fastest step "
              f"{fastest[v] * 1e3:.1f} ms), data {m['data'] * 1e3:7.1f} ms/step, total {(m['compute'] + m['data']) * 1e3:8.1f} ms/step")
    print(f"focusclip/clip fastest-step ratio: {fastest['focusclip'] / fastest['clip']:.3f}")
    total = (med["focusclip"]["compute"] + med["focusclip"]["data"]) / (med["clip"]["compute"] + med["clip"]["data"])
    print(f"focusclip/clip total step ratio (with data): {total:.3f}")
    print(f"focusclip/clip step ratio: {med['focusclip']['compute'] / med['clip']['compute']:.3f}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
