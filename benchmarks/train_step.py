"""Time the default training step: CLIP's, FocusCLIP's and the extra image-tower pass of the highlighted view, in one run.

The model is the `model` section of the params file (`--params`, default `params.yaml`: the embedded
default, `small` at 128 px with the text tower locked, only the last image block group trainable and
batch norm frozen); `--config`, `--pretrained`, `--image-size` and `--separate-encoder` override it. The
optimiser, loss, gradient clipping and augmentation come from `train_config(params)` (its `train`
section). One batch of stick figures (written to a temporary folder, read through `PoseTextDataset` +
`collate`) is used for every step. Three things are timed, alternating step by step (which goes first
rotates too) so that a busy machine slows all alike; warm-up steps are excluded:

  clip        CLIP's `train_step` (forward, loss, backward, clipping, optimiser step)
  focusclip   FocusCLIP's `train_step` (plain and highlighted views, three loss terms)
  extra pass  one more image-tower pass, forward and backward, of the highlighted view alone:
              the work the second view adds to a CLIP step

When the model has a frozen, deterministic trunk prefix (`model.frozen_prefix() > 0`) and no colour
augmentation, the steps take the cached path that training takes with the features stage
(`data/features/features.pt`): the prefix activations of the plain (and, with a fixed alpha, the
highlighted) view are computed once up front with `model.encode_prefix`, the locked text tower's pooled
outputs with `model.encode_text_pooled`, and every step runs only the trainable layers
(`cached={"prefix", "image", "highlighted", "text"}`); the extra pass is then `encode_from_prefix` of the
highlighted activations. Otherwise (or with `--no-cache`) every step runs the whole towers and the extra
pass is `visual(preprocess(highlight(images, heatmaps)))`.

Printed: the setup, per item the median and fastest step time (ms), `floor = clip step + extra pass`,
`focusclip/clip step ratio: <r>` and, as the last line, `focusclip step over floor: <r>` (FocusCLIP's
median over the sum of CLIP's and the extra pass's medians; the goal is <= 1.05: FocusCLIP costs no
more than a CLIP step plus the one pass its second view needs).

    python benchmarks/train_step.py                        # the params' model, batch 64, CPU
    python benchmarks/train_step.py --no-cache             # whole-tower steps (no features stage)
    python benchmarks/train_step.py --config paper --pretrained towers --batch 32 --device cuda
"""
import argparse, os, statistics, sys, tempfile, time
from pathlib import Path


def _sync(device):
    import torch
    if str(device).startswith("cuda"): torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml", help="params file: its `model` and `train` sections")
    ap.add_argument("--config", default=None, help="override model.config (small | tiny | minilm | paper | an open_clip name)")
    ap.add_argument("--pretrained", default=None, help="override model.pretrained")
    ap.add_argument("--image-size", type=int, default=None, help="override model.image_size")
    ap.add_argument("--separate-encoder", action="store_true", help="model.shared_encoder: false")
    ap.add_argument("--no-cache", action="store_true", help="whole-tower steps even when the frozen prefix could be cached")
    ap.add_argument("--batch", type=int, default=64, help="images per step")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per item (the items alternate step by step)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per item first")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = ap.parse_args(argv)

    import torch
    from contextlib import nullcontext
    from focusclip.config import get_device, seed_everything, read_config
    from focusclip.data import read_jsonl
    from focusclip.data import load_descriptions
    from focusclip.losses import FocusCLIPLoss
    from focusclip.model import create_model_from_params, model_params, num_params
    from focusclip.recipe import train_config
    from focusclip.batches import PoseTextDataset, collate
    from focusclip.train import make_optimizer, train_step
    from focusclip.testing import toy_records
    if a.threads: torch.set_num_threads(a.threads)
    device = get_device(a.device)
    precision = a.precision if a.precision != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
    autocast = (lambda: torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
    params = read_config(a.params)
    mcfg = dict(model_params(params))
    for k, v in dict(config=a.config, pretrained=a.pretrained, image_size=a.image_size).items():
        if v is not None: mcfg[k] = v
    if a.separate_encoder: mcfg["shared_encoder"] = False
    cfg = dict(train_config(params), total_steps=10_000)

    models = {}
    for variant in ("clip", "focusclip"):
        seed_everything(0)
        models[variant] = create_model_from_params(mcfg, use_heatmap=variant == "focusclip").to(device).train()
    fm = models["focusclip"]
    size = fm.image_size if isinstance(fm.image_size, int) else fm.image_size[0]
    n = 0 if (a.no_cache or cfg["augment"]) else fm.frozen_prefix()  # training uses no cache with augmentation either
    cache_hi = n > 0 and not fm.learn_alpha  # a learnt alpha changes the highlighted view every step: only its plain view is cached
    cache_text = n > 0 and fm.text_cacheable()

    with tempfile.TemporaryDirectory(prefix="train-step-") as tmp:
        tmp = Path(tmp)
        rpath = toy_records(tmp, n_train=a.batch, n_val=0, size=size, heatmaps=True, descriptions=True)
        ds = PoseTextDataset(read_jsonl(rpath, "train"), tmp, size, "precomputed", tmp/"heatmaps",
                             load_descriptions(tmp/"descriptions.jsonl"), seed=0)
        full = collate([ds[i] for i in range(a.batch)])
    images, heat = full["image"].to(device), full["heatmap"].to(device)

    state = {}
    with torch.no_grad():
        for v, model in models.items():
            hm = heat if v == "focusclip" else None
            batch, tokens, cached = full, model.tokenizer(full["text"]), None
            if n > 0:
                cached = dict(prefix=n, image=model.encode_prefix(images, n))
                if v == "focusclip" and cache_hi:
                    cached["highlighted"] = model.encode_prefix(model.highlight(images, heat), n); hm = None
                if cache_text:
                    cached["text"] = model.encode_text_pooled(model.tokenize(full["text"])); tokens = None
                if v == "clip" or cache_hi: batch = {k: full[k] for k in ("index", "text")}  # the loader reads no images then
            opt, sched = make_optimizer(model, cfg)
            loss = FocusCLIPLoss(cfg["loss"], cfg["temperature"], cfg["weights"], use_heatmap=v == "focusclip")
            state[v] = dict(model=model, batch=batch, tokens=tokens, heat=hm, cached=cached, opt=opt, sched=sched, loss=loss)
    hi_acts = state["focusclip"]["cached"]["highlighted"] if cache_hi else None
    visual_hi = fm.clip.visual if fm.visual_hi is None else fm.visual_hi

    def step(v):
        s = state[v]
        train_step(s["model"], s["loss"], s["opt"], s["sched"], s["batch"], s["tokens"], s["heat"], device, autocast,
                   cfg["grad_clip"], cfg["augment"], s["cached"])

    def extra_pass():
        with autocast():
            if hi_acts is not None: f = fm.encode_from_prefix(hi_acts, n, visual_hi)
            else: f = visual_hi(fm.preprocess(fm.highlight(images, heat)))
        f.float().sum().backward()

    items = {"clip": lambda: step("clip"), "focusclip": lambda: step("focusclip"), "extra pass": extra_pass}

    def timed(name):
        _sync(device); t0 = time.perf_counter()
        items[name]()
        _sync(device); dt = time.perf_counter() - t0
        if name == "extra pass": fm.zero_grad(set_to_none=True)  # its gradients must not reach FocusCLIP's optimiser step
        return dt

    for name in items:
        for _ in range(a.warmup): timed(name)
    times = {name: [] for name in items}
    order = list(items)
    for i in range(a.steps):
        for name in order[i % 3:] + order[:i % 3]: times[name].append(timed(name))
    med = {k: statistics.median(t) for k, t in times.items()}
    fast = {k: min(t) for k, t in times.items()}

    path = (f"cached: frozen prefix of {n} trunk modules, highlighted view {'cached' if cache_hi else 'through the whole tower'}, "
            f"texts {'cached' if cache_text else 'through the text tower'}") if n > 0 else \
           f"whole towers ({'--no-cache' if a.no_cache else 'augmentation on' if cfg['augment'] and fm.frozen_prefix() > 0 else 'no frozen prefix to cache'})"
    print(f"config {mcfg['config']}, batch {a.batch} at {size}px, {device} ({precision}), "
          f"{'shared' if mcfg['shared_encoder'] else 'separate'} encoder, {num_params(fm, trainable=True):,} trainable parameters, "
          f"torch threads {torch.get_num_threads()}, {a.steps} timed steps per item after {a.warmup} warm-up")
    print(path)
    for k in items:
        print(f"{k:>10}: {med[k] * 1e3:8.1f} ms/step median ({a.batch / med[k]:7.1f} images/s), fastest {fast[k] * 1e3:8.1f} ms")
    floor = med["clip"] + med["extra pass"]
    print(f"floor = clip step + extra pass: {floor * 1e3:.1f} ms/step (fastest {(fast['clip'] + fast['extra pass']) * 1e3:.1f} ms)")
    print(f"focusclip/clip step ratio: {med['focusclip'] / med['clip']:.3f}")
    print(f"focusclip step over floor: {med['focusclip'] / floor:.3f}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
