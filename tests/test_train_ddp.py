"""The same module under torchrun: two CPU processes (gloo), one data shard each, gradients averaged by DDP."""
import re, socket, subprocess, sys, time
from pathlib import Path
import pytest
import yaml
from test_train import toy_params, subprocess_env
from focusclip.testing import toy_records
from focusclip.train import load_checkpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    data = tmp_path / "data"
    toy_records(data, n_train=17, n_val=4, size=48, descriptions=True)  # 17: one record is dropped so the shards are equal
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(toy_params(data, epochs=2, batch_size=4)))  # 8 records per process: 2 steps per epoch
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "focusclip.train", "--params", str(params), "--variant", "focusclip",
           "--no-progress", "--models-dir", str(tmp_path / "models"), "--checkpoints-dir", str(tmp_path / "checkpoints"),
           "--results-dir", str(tmp_path / "results")]
    t = time.time()
    r = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    out = r.stdout + r.stderr
    ranks = dict(re.findall(r"rank (\d)/2: focusclip trained 4 steps, params sha256 ([0-9a-f]{16})", out))
    assert set(ranks) == {"0", "1"}, out[-3000:]  # both processes ran, each 2 epochs x 2 steps on its own shard
    assert ranks["0"] == ranks["1"]  # DDP kept the weights identical: gradients were averaged
    assert "2 process(es) on cpu" in out and out.count("epoch 2/2:") == 1  # only rank 0 logs
    ck = tmp_path / "checkpoints" / "focusclip"
    assert [p.name for p in ck.iterdir()] == ["last.pt"]  # one checkpoint, written once, no temporary left
    c = load_checkpoint(ck / "last.pt")
    assert (c["epoch"], c["step"], c["config"]["world_size"]) == (2, 4, 2)
    assert (tmp_path / "models" / "focusclip" / "open_clip_model.safetensors").exists()
    assert (tmp_path / "results" / "focusclip" / "metrics.json").exists()
    print(f"torchrun 2 processes: {time.time() - t:.1f} s")
