"""The report: the paper's headline from its own per-dataset numbers, mean ± std over seeds, the
ablation table, the written files; and the evaluate + report stage notebooks run by papermill."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT
from focusclip.report import (PAPER_TABLE, headline, shown_diff, comparison_table, results_frame, paper_docs, ablation_table,
                              make_report, table_markdown)
from focusclip.zeroshot import save_results


def test_paper_headline_from_its_table():
    "The rule over the paper's per-dataset numbers (PAPER_TABLE) gives 25.04 / 33.65 and +3.98 / +14.78 / +7.06 per task."
    t = comparison_table(results_frame(paper_docs()))
    tm = t[t.kind == "task mean"].set_index("task")
    assert [tm.loc[k, "diff"] for k in ("activity", "age", "emotion")] == [3.98, 14.78, 7.06]
    h = t[t.kind == "headline"].iloc[0]
    assert (round(h.baseline, 2), round(h.method, 2), h["diff"]) == (25.04, 33.65, 8.61)
    assert t.attrs["rule"] == "paper"
    md = table_markdown(t)
    assert "FER+" in md and "FairFace" in md  # shown beside the rule, not in it
    # Kinetics, FER+ and FairFace do not move the headline
    acc = {f"{a}/{b}": c for a, b, c, _ in PAPER_TABLE}
    assert headline(acc)["mean"] == headline({**acc, "activity/kinetics400": 99.0, "race/fairface": 0.0})["mean"]


def _result(task, k, n_classes, acc, n=200):
    return {"dataset": "synthetic", "task": task, "key": f"{task}/synthetic", "k": k, "n": n, "n_classes": n_classes,
            "top1": acc, "topk": acc, "topk_ci": [acc - 3, acc + 3], "top1_ci": [acc - 3, acc + 3],
            "chance_top1": 100 / n_classes, "chance_topk": 100 * min(k, n_classes) / n_classes,
            "classnames": [f"c{i}" for i in range(n_classes)], "per_class_topk": {f"c{i}": acc for i in range(n_classes)},
            "confusion": np.eye(n_classes, dtype=int).tolist(),
            "embedding_2d": {"x": [0.0, 1.0], "y": [1.0, 0.0], "label": [0, 1]}}


def _write_runs(d, runs):
    for v, s, (a, g, e) in runs:
        save_results([_result("activity", 3, 12, a), _result("age", 1, 3, g), _result("emotion", 3, 5, e)], d / f"{v}_s{s}.json", v, s)


def test_report_over_seeds_and_ablations(tmp_path):
    runs = [("clip", 0, (40, 50, 70)), ("clip", 1, (44, 52, 72)), ("clip", 2, (42, 48, 74)),
            ("focusclip", 0, (50, 55, 80)), ("focusclip", 1, (54, 57, 78)), ("focusclip", 2, (52, 56, 79)),
            ("focusclip_noheatmap", 0, (45, 50, 75))]
    _write_runs(tmp_path / "eval", runs)
    rep = make_report(tmp_path / "eval", tmp_path / "report.md", tmp_path / "report.csv", tmp_path / "metrics/report.json",
                      tmp_path / "figures", {"ablations": ["clip", "focusclip", "focusclip_noheatmap"]})
    m = json.loads((tmp_path / "metrics/report.json").read_text())
    clip_h = [np.mean(a) for v, _, a in runs if v == "clip"]; fc_h = [np.mean(a) for v, _, a in runs if v == "focusclip"]
    assert m["rule"] == "synthetic" and m["headline"]["n_seeds"] == 3
    assert m["headline"]["clip"] == pytest.approx(np.mean(clip_h), abs=1e-4)
    assert m["headline"]["clip_std"] == pytest.approx(np.std(clip_h, ddof=1), abs=1e-4)
    assert m["headline"]["focusclip_std"] == pytest.approx(np.std(fc_h, ddof=1), abs=1e-4)
    assert m["datasets"]["activity/synthetic"]["chance"] == 25.0
    assert m["ablations"]["focusclip_noheatmap"]["n_seeds"] == 1
    md = (tmp_path / "report.md").read_text()
    assert "42.00 ± 2.00" in md and "52.00 ± 2.00" in md  # activity: mean ± std over the three seeds
    assert "Seeds per variant: clip 3, focusclip 3, focusclip_noheatmap 1" in md
    assert "activity 25.00% (top-3)" in md and "age 33.33% (top-1)" in md and "emotion 60.00% (top-3)" in md
    csv = pd.read_csv(tmp_path / "report.csv")
    assert list(csv.columns[:4]) == ["kind", "task", "dataset", "k"] and "focusclip_std" in csv.columns
    assert csv.kind.tolist() == ["dataset"] * 3 + ["task mean"] * 3 + ["headline"]
    figs = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert "zeroshot_bars.png" in figs and "zeroshot_bars.svg" in figs and "confusion_activity_synthetic.svg" in figs
    assert "embeddings_emotion_synthetic.png" in figs and "per_class_age_synthetic.png" in figs
    assert rep["ablation"].variant.tolist() == ["clip", "focusclip", "focusclip_noheatmap"]


def test_report_reads_exactly_the_declared_runs(tmp_path):
    "A results file of a seed no longer in the params is named in a warning and never averaged in; a declared run without its file is an error naming it."
    from focusclip.report import run_files
    runs = [(v, s, (40 + s, 50, 70)) for v in ("clip", "focusclip") for s in (42, 43, 44)]
    for v, s, (a, g, e) in runs:
        save_results([_result("activity", 3, 12, a), _result("age", 1, 3, g), _result("emotion", 3, 5, e)], tmp_path / f"eval/{v}_seed_{s}.json", v, s)
    declared = run_files(tmp_path / "eval", ["clip", "focusclip"], [42, 43])[:-1]  # no pretrained towers here
    with pytest.warns(UserWarning, match=r"not runs of the current params .*: clip_seed_44.json, focusclip_seed_44.json"):
        rep = make_report(tmp_path / "eval", tmp_path / "r.md", tmp_path / "r.csv", tmp_path / "m.json", tmp_path / "f", runs=declared)
    assert "Seeds per variant: clip 2, focusclip 2" in (tmp_path / "r.md").read_text()
    assert rep["metrics"]["datasets"]["activity/synthetic"]["clip"] == pytest.approx(82.5)  # seeds 42 and 43 only (82, 83), not 44
    with pytest.raises(FileNotFoundError, match=r"clip_seed_45.json: results file not found"):
        make_report(tmp_path / "eval", tmp_path / "r.md", tmp_path / "r.csv", tmp_path / "m.json", tmp_path / "f",
                    runs=run_files(tmp_path / "eval", ["clip"], [45]))


def test_report_errors(tmp_path):
    (tmp_path / "eval").mkdir()
    with pytest.raises(FileNotFoundError, match="no results files"):
        make_report(tmp_path / "eval", tmp_path / "r.md", tmp_path / "r.csv", tmp_path / "m.json", tmp_path / "f")
    _write_runs(tmp_path / "eval", [("clip", 0, (1, 2, 3))])
    with pytest.raises(ValueError, match="no results for variant 'focusclip'"):
        make_report(tmp_path / "eval", tmp_path / "r.md", tmp_path / "r.csv", tmp_path / "m.json", tmp_path / "f")
    save_results([_result("activity", 3, 12, 5)], tmp_path / "eval/clip_copy.json", "clip", 0)
    with pytest.raises(ValueError, match="same variant, seed and set"):
        results_frame([json.loads(p.read_text()) for p in sorted((tmp_path / "eval").glob("*.json"))])
    from focusclip.config import ParamsError
    with pytest.raises(ParamsError, match="params.yaml:report.headline_rule: 'best' is not one of"):
        make_report(tmp_path / "eval", tmp_path / "r.md", tmp_path / "r.csv", tmp_path / "m.json", tmp_path / "f", {"report": {"headline_rule": "best"}})


@pytest.mark.slow
def test_evaluate_and_report_stages(tmp_path):
    "The evaluate (one run per variant and seed, and the pretrained towers) and report stage notebooks under papermill, on a tiny embedded dataset and untrained tiny models."
    import torch
    from focusclip.synth import generate
    from focusclip.model import create_model, save_model
    generate(tmp_path / "data/records", n_train=4, n_val=0, n_test=24, image_size=64, workers=1, progress=False)
    for i, (v, s) in enumerate([(v, s) for v in ("clip", "focusclip") for s in (5, 6)]):
        torch.manual_seed(i); save_model(create_model("tiny"), tmp_path / f"models/seed_{s}/{v}")
    (tmp_path / "params.yaml").write_text("base: {seed: 5, device: cpu}\ntrain:\n  seeds: [5, 6]\nevaluate:\n  bootstrap: 100\n  progress: false\n"
                                          "report:\n  headline_rule: paper\n")
    (tmp_path / "results/notebooks").mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    pm = [sys.executable, "-m", "papermill", "-k", "python3", "--engine", "focusclip", "--cwd", str(tmp_path)]
    runs = [("clip", 5), ("clip", 6), ("focusclip", 5), ("focusclip", 6), ("pretrained", None)]  # as dvc.yaml's evaluate@ matrix and evaluate_pretrained
    for v, s in runs:
        args = ["-p", "variant", v, "-p", "out_path", f"results/eval/{v}.json" if s is None else f"results/eval/{v}_seed_{s}.json"]
        if s is not None: args += ["-p", "seed", str(s), "-p", "model_dir", f"models/seed_{s}/{v}"]
        r = subprocess.run(pm + [str(ROOT / "stages/evaluate.ipynb"), str(tmp_path / f"results/notebooks/evaluate_{v}_{s}.ipynb"),
                                 "-p", "params_path", "params.yaml", *args], env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    subprocess.run(pm + [str(ROOT / "stages/report.ipynb"), str(tmp_path / "results/notebooks/report.ipynb"), "-p", "params_path", "params.yaml"],
                   env=env, check=True, capture_output=True, timeout=600)
    assert sorted(p.name for p in (tmp_path / "results/eval").glob("*.json")) == sorted([f"{v}_seed_{s}.json" for v in ("clip", "focusclip") for s in (5, 6)] + ["pretrained.json"])
    assert json.loads((tmp_path / "results/eval/clip_seed_6.json").read_text())["seed"] == 6
    m = json.loads((tmp_path / "results/metrics/report.json").read_text())
    assert m["rule"] == "synthetic" and set(m["datasets"]) == {"activity/synthetic", "age/synthetic", "emotion/synthetic"}
    md = (tmp_path / "results/report.md").read_text()
    assert "headline: mean of task means" in md and "Seeds per variant: clip 2, focusclip 2" in md
    assert (tmp_path / "results/figures/report/zeroshot_bars.svg").exists()
    # one seed fewer: the report reads exactly the runs the params declare and names the leftovers
    (tmp_path / "params.yaml").write_text((tmp_path / "params.yaml").read_text().replace("seeds: [5, 6]", "seeds: [5]"))
    subprocess.run(pm + [str(ROOT / "stages/report.ipynb"), str(tmp_path / "results/notebooks/report.ipynb"), "-p", "params_path", "params.yaml"],
                   env=env, check=True, capture_output=True, timeout=600)
    md = (tmp_path / "results/report.md").read_text()
    assert "Seeds per variant: clip 1, focusclip 1" in md
    log = (tmp_path / "results/notebooks/report.ipynb").read_text()
    assert "left out of the report, not runs of the current params" in log and "clip_seed_6.json, focusclip_seed_6.json" in log
