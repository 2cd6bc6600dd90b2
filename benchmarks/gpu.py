"""Train the paper's configuration on a GPU for a few hundred steps: images/s, peak memory and MFU.

The model is `model.config: paper` (timm ViT-B/16 + BERT-base mean-pooled over 512 positions, 512-d,
224 px), built offline from scratch (`pretrained: ""`: the speed does not depend on the weights), with
the paper's training step: FocusCLIP's plain and highlighted views through the shared image encoder,
the three-term NT-Xent loss at 0.5, SGD with momentum 0.9 at lr 5e-4, clipping at 1.0, bf16 autocast.
Every step is `focusclip.train.train_step`, the step the trainer runs. Inputs are random tensors of
the right shapes (images, heatmaps, token ids with the padding of real descriptions), already on the
device, so the figure is the model's speed, not the data loader's.

For each batch size: the median step time over `--steps` timed steps after `--warmup` untimed ones,
images/s, the peak memory torch allocated, the FLOPs of one step (counted by
`torch.utils.flop_counter.FlopCounterMode` on a real step: matmuls and convolutions, forward and
backward) and MFU = achieved FLOP/s over the GPU's dense bf16 peak (a table of known GPUs;
`--peak-tflops` for others). The last line is `MFU at batch <largest>: <percent>`.

    python benchmarks/gpu.py                         # batch 32 and 256, 200 timed steps each
    python benchmarks/gpu.py --compile               # the same under torch.compile
    python benchmarks/gpu.py --config small --device cpu --batch 4 --steps 2 --warmup 1   # a smoke run on CPU

On a machine without CUDA (and without `--device cpu`) it prints why it skipped and exits 0.
"""
import argparse, statistics, sys, time

PEAK_BF16_TFLOPS = {  # dense bf16 tensor-core peaks (no sparsity), from the vendors' data sheets
    "H200": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "GH200": 989.4,
    "A100": 312.0, "A10G": 70.0, "A10": 125.0, "L40S": 362.0, "L4": 121.0, "RTX 4090": 165.2, "RTX 3090": 71.0,
}


def peak_tflops(name: str) -> float | None:
    "The dense bf16 peak of a GPU by its name (the longest matching key), None when unknown."
    hits = [k for k in PEAK_BF16_TFLOPS if k.lower() in name.lower()]
    return PEAK_BF16_TFLOPS[max(hits, key=len)] if hits else None


def fake_batch(model, batch: int, device):
    "Random images and heatmaps at the model's size, and token ids padded like real descriptions (~60-120 tokens)."
    import torch
    g = torch.Generator().manual_seed(0)
    s = model.image_size; h, w = (s, s) if isinstance(s, int) else s
    images = torch.rand(batch, 3, h, w, generator=g)
    heat = torch.rand(batch, h, w, generator=g)
    tokens = model.tokenize(["a person standing with both arms raised above the head " * 12] * batch)
    lengths = torch.randint(60, 120, (batch,), generator=g)
    pad = torch.arange(tokens.shape[1])[None] >= lengths[:, None]
    pad_id = int(model.tokenize(["a"])[0, -1])  # a one-word text ends in padding
    tokens = tokens.masked_fill(pad, pad_id)
    return {"image": images.to(device)}, tokens.to(device), heat.to(device)


def bench(model, loss_fn, batch: int, steps: int, warmup: int, device: str, precision: str, compiled: bool) -> dict:
    import torch
    from contextlib import nullcontext
    from functools import partial
    from torch.utils.flop_counter import FlopCounterMode
    from focusclip.train import train_step
    cuda = device.startswith("cuda")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=5e-4, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    autocast = partial(torch.autocast, "cuda" if cuda else "cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext
    b, tokens, heat = fake_batch(model, batch, device)
    net = torch.compile(model) if compiled else model
    step = lambda: train_step(net, loss_fn, opt, sched, b, tokens, heat, device, autocast=autocast, grad_clip=1.0)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(max(warmup, 1)): step()
    with FlopCounterMode(display=False) as fc: step()
    flops = fc.get_total_flops()
    if cuda: torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        sync(); t0 = time.perf_counter(); step(); sync(); times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return dict(batch=batch, step_s=med, images_s=batch / med, flops=flops, tflops_s=flops / med / 1e12,
                peak_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="paper", help="model.config (default paper: ViT-B/16 + BERT-base)")
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 256], help="batch sizes, one run each")
    ap.add_argument("--steps", type=int, default=200, help="timed steps per batch size")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps first (torch.compile compiles here)")
    ap.add_argument("--variant", default="focusclip", choices=("clip", "focusclip"))
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (cpu: a smoke run of the code path)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, if it is not in the table")
    a = ap.parse_args(argv)

    import torch
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here, skipped (it measures GPU training; run it where a GPU is, "
              "or pass --device cpu --config small for a smoke run)")
        return 0
    from focusclip.losses import FocusCLIPLoss
    from focusclip.model import create_model, num_params
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else "CPU"
    peak = a.peak_tflops or (peak_tflops(name) if a.device.startswith("cuda") else None)
    model = create_model(a.config, use_heatmap=a.variant == "focusclip", alpha_mode="free", normalize="none",
                         text_pooling="mean_all" if a.config == "paper" else "mean", device=a.device)
    model.train()
    loss_fn = FocusCLIPLoss("ntxent", temperature=0.5, use_heatmap=a.variant == "focusclip")
    print(f"device {name} (dense bf16 peak {peak if peak else 'unknown'} TFLOP/s); torch {torch.__version__}; model {a.config} "
          f"({num_params(model) / 1e6:.1f} M parameters, {model.image_size} px); variant {a.variant}; precision {a.precision}; "
          f"compile {a.compile}; {a.steps} timed steps after {a.warmup} warm-up")
    rows = []
    for batch in a.batch:
        r = bench(model, loss_fn, batch, a.steps, a.warmup, a.device, a.precision, a.compile)
        r["mfu"] = 100 * r["tflops_s"] / peak if peak else float("nan")
        rows.append(r)
        print(f"batch {batch:4d}: step {r['step_s'] * 1000:8.1f} ms  {r['images_s']:8.1f} images/s  peak memory {r['peak_gib']:6.2f} GiB  "
              f"{r['flops'] / 1e12:7.3f} TFLOP/step  {r['tflops_s']:7.1f} TFLOP/s  MFU {r['mfu']:5.1f}%", flush=True)
    last = rows[-1]
    print(f"MFU at batch {last['batch']}: {last['mfu']:.1f}" if peak else f"images/s at batch {last['batch']}: {last['images_s']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
