"""focusclip.train: data path, heatmaps, descriptions, outputs, resume and restart rules (small, in-process)."""
import json, os, sys
from pathlib import Path
import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT

from focusclip.config import ParamsError
from focusclip.data import read_jsonl
from focusclip.recipe import TRAIN_DEFAULTS, train_config
from focusclip.batches import PoseTextDataset, collate, batch_heatmaps, class_caption
from focusclip.train import train, load_checkpoint, main
from focusclip.testing import toy_records


def toy_params(data: Path, **train_keys) -> dict:
    "Params for a tiny run on a toy set written by `toy_records` into `data`."
    return {"base": {"seed": 0, "device": "cpu"}, "model": {"config": "tiny"},
            "train": {"records": str(data / "records.jsonl"), "descriptions": str(data / "descriptions.jsonl"),
                      "heatmaps_dir": str(data / "heatmaps"), "heatmaps": "on_the_fly",
                      "epochs": 2, "batch_size": 4, "warmup_steps": 1, **train_keys}}


def outs(base: Path) -> dict:
    return dict(models_dir=base / "models", checkpoints_dir=base / "checkpoints", results_dir=base / "results")


def subprocess_env() -> dict:
    "Environment for training subprocesses: the repo importable, one thread each (same numerics in every run)."
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("toy")
    toy_records(d, n_train=12, n_val=6, size=48, heatmaps=True, descriptions=True)
    return d


def test_repo_params_train_section():
    "The repository's params.yaml train section is valid, keeps both variants, and sets every optimisation key itself."
    cfg = train_config(ROOT / "params.yaml")
    assert cfg["variants"] == ["clip", "focusclip"]
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(p["train"]) <= set(TRAIN_DEFAULTS)
    for k in ("optimizer", "lr", "momentum", "weight_decay", "batch_size", "epochs", "grad_clip", "schedule", "warmup_steps", "loss", "temperature"):
        assert p["train"][k] is not None and p["train"][k] == cfg[k], k


def test_train_section_errors(tmp_path):
    c = train_config({"train": {"optimizer": "sgd", "batch_size": 8}})
    assert (c["optimizer"], c["lr"], c["batch_size"], c["epochs"], c["schedule"]) == ("sgd", 1e-3, 8, 4, "cosine")
    p = tmp_path / "params.yaml"; p.write_text("train:\n  batch_size: 0\n")
    with pytest.raises(ParamsError, match=r"params.yaml:train.batch_size: must be >= 1"): train_config(p)
    p.write_text("train:\n  variants: [clip, blip]\n")
    with pytest.raises(ParamsError, match=r"unknown variant\(s\) \['blip'\]"): train_config(p)
    p.write_text("train:\n  optimizer: adam\n")
    with pytest.raises(ParamsError, match=r"params.yaml:train.optimizer: 'adam' is not one of"): train_config(p)
    p.write_text("train:\n  preset: paper\n")
    with pytest.raises(ParamsError, match=r"params.yaml:train: unknown key\(s\) \['preset'\]"): train_config(p)


def test_train_checks_each_section_once_and_names_the_file(toy, tmp_path, checked_sections):
    "One `train()` call on a params file reads it once and checks each of its sections once; a model error names the file and key."
    p, checked = tmp_path / "params.yaml", checked_sections
    p.write_text(yaml.safe_dump(toy_params(toy, epochs=1, heatmaps="precomputed")))  # precomputed: train's check reads model and heatmaps too
    train(p, "focusclip", progress=False, **outs(tmp_path))
    assert sorted(checked) == [f"{p}:{s}" for s in ("base", "heatmaps", "model", "train")]
    p.write_text(yaml.safe_dump({**toy_params(toy), "model": {"config": "tiny", "alpha_mode": "bogus"}}))
    checked.clear()
    with pytest.raises(ParamsError) as e: train(p, "focusclip", progress=False, **outs(tmp_path))
    assert str(e.value).startswith(f"{p}:model.alpha_mode: 'bogus' is not one of") and checked.count(f"{p}:model") == 1


def test_precomputed_heatmaps_match_on_the_fly(toy):
    "The heatmaps stage's PNGs and the batch drawn in torch from the joints agree to 8-bit precision."
    recs = read_jsonl(toy / "records.jsonl", "train")[:6]
    pre = PoseTextDataset(recs, toy, 48, "precomputed", toy / "heatmaps")
    fly = PoseTextDataset(recs, toy, 48, "on_the_fly")
    hp = batch_heatmaps(collate([pre[i] for i in range(6)]), 48, "cpu")
    hf = batch_heatmaps(collate([fly[i] for i in range(6)]), 48, "cpu")
    assert hp.shape == hf.shape == (6, 48, 48)
    assert hf.max() > 0.9 and hf.mean() > 0.01  # a real heatmap, not an empty one
    assert (hp - hf).abs().max() <= 0.5 / 255 + 1e-5


def test_descriptions_drawn_per_epoch_and_missing_counted(toy, tmp_path):
    recs = read_jsonl(toy / "records.jsonl", "train")
    texts = {r.id: [f"{r.id} pose {k}" for k in range(4)] for r in recs[:-3]}  # the last three have none
    ds = PoseTextDataset(recs, toy, 32, descriptions=texts, seed=5)
    assert ds.missing == [r.id for r in recs[-3:]]
    draws = []
    for e in range(6):
        ds.set_epoch(e); draws.append(ds.text(0))
        assert ds.text(len(recs) - 1) == class_caption(recs[-1].activity)
    assert set(draws) <= set(texts[recs[0].id]) and len(set(draws)) > 1
    ds.set_epoch(2); again = PoseTextDataset(recs, toy, 32, descriptions=texts, seed=5); again.set_epoch(2)
    assert [ds.text(i) for i in range(len(recs))] == [again.text(i) for i in range(len(recs))]
    # the count reaches the run's summary and its metrics
    desc = tmp_path / "d.jsonl"
    desc.write_text("".join(json.dumps({"id": k, "text": t, "n": i}) + "\n" for k, v in texts.items() for i, t in enumerate(v)))
    s = train(toy_params(toy, descriptions=str(desc), epochs=1), "clip", progress=False, **outs(tmp_path))
    assert s["missing_descriptions"] == 3
    m = json.loads((tmp_path / "results" / "clip" / "metrics.json").read_text())
    assert m["data"]["missing_descriptions"] == 3


def test_clip_run_outputs_and_saved_model(toy, tmp_path):
    "The baseline trains, writes checkpoint, dvclive metrics, the loss curve and a model folder that reloads to the same weights."
    from focusclip.model import load_model, create_model_from_params
    s = train(toy_params(toy, use_descriptions=False), "clip", progress=False, **outs(tmp_path))
    assert (s["steps"], s["steps_per_epoch"], s["epochs"]) == (6, 3, 2)
    ck = load_checkpoint(tmp_path / "checkpoints" / "clip" / "last.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "step", "rng", "sampler", "config", "best", "history"} <= set(ck)
    assert (ck["epoch"], ck["step"], ck["config"]["variant"]) == (2, 6, "clip")
    assert set(ck["rng"]) >= {"python", "numpy", "torch"}
    res = tmp_path / "results" / "clip"
    assert (res / "loss_curve.png").stat().st_size > 5000
    rows = (res / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["step", "loss"] and [int(r.split("\t")[0]) for r in rows[1:]] == list(range(1, 7))
    assert not (res / "plots" / "metrics" / "train" / "alpha.tsv").exists()  # no highlight branch in the baseline
    assert len((res / "plots" / "metrics" / "val" / "recall@1.tsv").read_text().splitlines()) == 3  # header + 2 epochs
    m = json.loads((res / "metrics.json").read_text())
    assert 0 <= m["val"]["recall@1"] <= m["val"]["recall@5"] <= 1 and "hi_img" not in m["train"]
    # the saved model is the trained one
    folder = tmp_path / "models" / "clip"
    assert {"open_clip_config.json", "open_clip_model.safetensors", "focusclip.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "focusclip.json").read_text())["variant"] == "clip"
    trained = create_model_from_params({"config": "tiny"}, use_heatmap=False); trained.load_state_dict(ck["model"]); trained.eval()
    loaded = load_model(folder).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad(): assert torch.allclose(loaded.encode_image(x), trained.encode_image(x), atol=1e-6)


def test_rerun_of_finished_run_and_restart_on_changed_config(toy, tmp_path, capsys):
    p = toy_params(toy, epochs=1)
    a = train(p, "focusclip", progress=False, **outs(tmp_path))
    assert a["alpha"] is not None and abs(a["alpha"] - 0.5) > 1e-6  # alpha is learnt
    b = train(p, "focusclip", progress=False, **outs(tmp_path))  # a finished run is trained again, and identically
    assert b["params_hash"] == a["params_hash"] and b["steps"] == a["steps"] == 3
    assert "a finished run; training again from the start" in capsys.readouterr().out
    p["train"]["lr"] = 0.01
    c = train(p, "focusclip", progress=False, **outs(tmp_path))
    assert "different config (differs in ['lr'])" in capsys.readouterr().out
    assert c["steps"] == 3 and c["params_hash"] != a["params_hash"]


def test_resume_after_error_is_exact(toy, tmp_path):
    "Stopped in the middle of epoch 2, rerun: same weights as a run never interrupted (precomputed heatmaps, descriptions)."
    p = toy_params(toy, heatmaps="precomputed")
    ref = train(p, "focusclip", progress=False, **outs(tmp_path / "ref"))
    def stop(step, epoch):
        if step == 5: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): train(p, "focusclip", progress=False, on_step=stop, **outs(tmp_path / "cut"))
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "focusclip" / "last.pt")["epoch"] == 1
    again = train(p, "focusclip", progress=False, **outs(tmp_path / "cut"))
    assert again["params_hash"] == ref["params_hash"] and again["steps"] == 6


def test_clear_errors(toy, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl: records file not found"):
        train(toy_params(toy, records=str(tmp_path / "nowhere.jsonl")), "clip", progress=False, **outs(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"toy0000.png: precomputed heatmap not found; run the heatmaps stage"):
        train(toy_params(toy, heatmaps="precomputed", heatmaps_dir=str(tmp_path)), "focusclip", progress=False, **outs(tmp_path))
    with pytest.raises(SystemExit): main(["--variant", "blip"])


def test_ablation_switches_separate_encoder_fixed_alpha(toy, tmp_path):
    "`model.shared_encoder: false` and `model.learn_alpha: false` reach the model through params."
    p = toy_params(toy, epochs=1)
    p["model"].update(shared_encoder=False, learn_alpha=False, alpha_init=0.3)
    s = train(p, "focusclip", progress=False, **outs(tmp_path))
    assert abs(s["alpha"] - 0.3) < 1e-7
    ck = load_checkpoint(tmp_path / "checkpoints" / "focusclip" / "last.pt")
    assert any(k.startswith("visual_hi.") for k in ck["model"])  # the separate encoder of the highlighted view was trained
    assert ck["config"]["model"]["shared_encoder"] is False


def test_bf16_autocast_path_runs_on_cpu(toy, tmp_path):
    "The mixed-precision path (bf16 autocast, the GPU default) also runs on CPU; the loss is computed in fp32."
    s = train(toy_params(toy, epochs=1, precision="bf16"), "focusclip", progress=False, **outs(tmp_path))
    assert s["precision"] == "bf16" and np.isfinite(s["final_loss"])


def test_record_frame_size_checked_against_the_image(toy, tmp_path):
    "A record whose frame size is not its image's (converted without its images) stops training and evaluation, naming both."
    from focusclip.data import write_jsonl, image_path
    from focusclip.evalsets import synthetic_tasks
    recs = read_jsonl(toy / "records.jsonl")
    recs[0].width, recs[0].height = 1280, 720  # what a conversion without the images assumes
    for r in recs: r.image = str(image_path(r, toy))
    bad = tmp_path / "records.jsonl"; write_jsonl(recs, bad)
    with pytest.raises(ValueError, match=r"toy0000.png: the image is 48x48 but record 'toy0000' says 1280x720"):
        train(toy_params(toy, records=str(bad), heatmaps="on_the_fly"), "clip", progress=False, **outs(tmp_path))
    recs[0].split = "test"; write_jsonl(recs, bad)
    with pytest.raises(ValueError, match=r"the image is 48x48 but record 'toy0000' says 1280x720"):
        synthetic_tasks(bad, split="test", tasks=("activity",), by_shot=False)
