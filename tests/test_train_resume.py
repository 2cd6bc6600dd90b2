"""Kill -9 in the middle of an epoch, rerun: the same final weights on CPU as a run that was never interrupted."""
import os, signal, subprocess, sys
from pathlib import Path
import pytest
import torch
import yaml
from test_train import toy_params, subprocess_env
from focusclip.testing import toy_records
from focusclip.train import load_checkpoint

KILLER = """
import os, signal, sys
from focusclip.train import train
kill_at = int(sys.argv[2])
def hook(step, epoch):
    if step == kill_at: os.kill(os.getpid(), signal.SIGKILL)
train(sys.argv[1], "focusclip", models_dir=sys.argv[3] + "/models", checkpoints_dir=sys.argv[3] + "/checkpoints",
      results_dir=sys.argv[3] + "/results", progress=False, on_step=hook)
"""


def cli(params: Path, out: Path, env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "focusclip.train", "--params", str(params), "--variant", "focusclip", "--no-progress",
           "--models-dir", str(out / "models"), "--checkpoints-dir", str(out / "checkpoints"), "--results-dir", str(out / "results")]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_kill9_mid_epoch_then_resume_gives_identical_weights(tmp_path):
    data = tmp_path / "data"
    toy_records(data, n_train=12, n_val=4, size=48, descriptions=True)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(toy_params(data, epochs=3, batch_size=4)))  # 3 steps per epoch, 9 in all
    env = subprocess_env()

    ref = cli(params, tmp_path / "ref", env)
    assert ref.returncode == 0, ref.stderr[-3000:]

    script = tmp_path / "killer.py"; script.write_text(KILLER)
    cut = tmp_path / "cut"
    killed = subprocess.run([sys.executable, str(script), str(params), "5", str(cut)], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])  # died at step 5, in epoch 2
    ck = cut / "checkpoints" / "focusclip" / "last.pt"
    assert load_checkpoint(ck)["epoch"] == 1 and not (cut / "models" / "focusclip").exists()
    logged = (cut / "results" / "focusclip" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()[1:]
    assert len(logged) == 5  # steps 4 and 5 of the killed epoch were logged before the kill

    again = cli(params, cut, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming focusclip after epoch 1/3 (step 3)" in again.stdout

    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / "focusclip" / "last.pt")
    b = load_checkpoint(ck)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (3, 9)
    assert a["model"].keys() == b["model"].keys()
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, f"weights differ after resume: {differ[:5]}"
    for k in ("exp_avg", "exp_avg_sq"):  # the optimiser state too
        for i in a["optimizer"]["state"]:
            assert torch.equal(a["optimizer"]["state"][i][k], b["optimizer"]["state"][i][k])
    hashes = [l.split()[-1] for out in (ref.stdout, again.stdout) for l in out.splitlines() if "params sha256" in l]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    # the resumed logs hold each step once
    steps = [int(r.split("\t")[0]) for r in (cut / "results" / "focusclip" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 10))
    assert (cut / "models" / "focusclip" / "open_clip_model.safetensors").read_bytes() == \
           (tmp_path / "ref" / "models" / "focusclip" / "open_clip_model.safetensors").read_bytes()
