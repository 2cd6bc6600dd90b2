"""The configuration: params.yaml and every preset resolve to what they say; every key at every depth is checked."""
import subprocess, sys
import pytest
import yaml
from conftest import ROOT

from focusclip.config import ParamsError
from focusclip.pipeline import load_config, resolve, preset_args, show_config
from focusclip.towers import MODEL_CONFIGS

PRESETS = sorted((ROOT / "presets").glob("*.yaml"))
PARAMS = ROOT / "params.yaml"


def test_params_yaml_resolves_to_the_embedded_default():
    c = load_config(PARAMS)
    t = c["train"]
    assert (t["optimizer"], t["lr"], t["batch_size"], t["epochs"], t["schedule"], t["warmup_steps"], t["loss"], t["temperature"]) == \
           ("adamw", 0.001, 64, 4, "cosine", 20, "ntxent", 0.5)
    assert (c["model"]["config"], c["model"]["image_size"], c["heatmaps"]["size"], c["data"]["source"]) == ("small", 128, 128, "synthetic")
    assert c["data"]["synthetic"]["seed"] == 42 and c["describe"]["backend"] == "rules"


def test_paper_preset_resolves_to_the_paper():
    c = resolve(PARAMS, ROOT / "presets/paper.yaml")
    t, m = c["train"], c["model"]
    assert (t["optimizer"], t["momentum"], t["lr"], t["batch_size"], t["epochs"], t["grad_clip"], t["loss"], t["temperature"],
            t["schedule"], t["warmup_steps"], t["weight_decay"], t["features"]) == \
           ("sgd", 0.9, 0.0005, 32, 64, 1.0, "ntxent", 0.5, "constant", 0, 0.0, "")
    assert (m["config"], m["pretrained"], m["learn_alpha"], m["lock_text"], m["unlocked_image_groups"], m["freeze_bn"],
            m["alpha_mode"], m["normalize"], m["text_pooling"]) == ("paper", "towers", True, False, -1, False, "free", "none", "mean_all")
    assert (m["image_size"] or MODEL_CONFIGS[m["config"]]["vision_cfg"]["image_size"]) == 224 and c["heatmaps"]["size"] == 224
    assert MODEL_CONFIGS["paper"]["vision_cfg"]["timm_model_name"] == "vit_base_patch16_224"
    assert MODEL_CONFIGS["paper"]["text_cfg"]["hf_model_name"] == "bert-base-uncased"
    tpl = c["evaluate"]["templates"]
    assert tpl["activity"] == ["a photo of a person {}"] and all(len(v) == 1 for v in tpl.values())  # one prompt per class
    assert (c["data"]["source"], c["describe"]["backend"], c["describe"]["hub_config"], c["base"]["device"]) == ("mpii", "hub", "gpt-4", "cuda")


EXPECTED = {  # what each ablation preset changes, against params.yaml
    "infonce.yaml": {("train", "loss"): "infonce"},
    "learned_alpha.yaml": {("model", "learn_alpha"): True},
    "no_appearance.yaml": {("describe", "appearance"): False},
    "no_descriptions.yaml": {("train", "use_descriptions"): False},
    "no_heatmap.yaml": {("train", "variants"): ["clip"]},
    "separate_encoder.yaml": {("model", "shared_encoder"): False},
}


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_sets_what_it_names_and_nothing_else(preset):
    base, c = load_config(PARAMS), resolve(PARAMS, preset)
    named = yaml.safe_load(preset.read_text())
    for sec, keys in named.items():
        for k, v in keys.items():
            got = c[sec][k]
            assert got == v if not isinstance(v, dict) else all(got[kk] == vv for kk, vv in v.items()), (sec, k)
    for sec in base:  # keys the preset does not name keep params.yaml's values
        for k in base[sec]:
            if k not in (named.get(sec) or {}): assert c[sec][k] == base[sec][k], (preset.name, sec, k)
    if preset.name != "paper.yaml":
        for (sec, k), v in EXPECTED[preset.name].items(): assert c[sec][k] == v
    assert preset_args(preset, PARAMS)  # usable with dvc exp run


def cli(*args):
    return subprocess.run([sys.executable, "-c", "import sys; from focusclip.cli import preset_main; sys.exit(preset_main(sys.argv[1:]))", *args],
                          cwd=ROOT, capture_output=True, text=True)


def test_show_prints_every_section_resolved():
    r = cli("--show", "presets/paper.yaml")
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(r.stdout)
    assert list(shown) == ["base", "data", "heatmaps", "describe", "model", "train", "subject", "evaluate", "views", "report"]
    assert shown == yaml.safe_load(show_config(resolve(PARAMS, ROOT / "presets/paper.yaml")))
    assert shown["train"]["epochs"] == 64 and shown["train"]["lr"] == 0.0005
    r = cli("--show")
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["train"]["epochs"] == 4


@pytest.mark.parametrize("text, message", [
    ("train: {epoch: 3}\n", "bad.yaml:train: unknown key(s) ['epoch']"),
    ("train: {epochs: three}\n", "bad.yaml:train.epochs: expected int"),
    ("data: {synthetic: {n_trian: 10}}\n", "bad.yaml:data.synthetic: unknown key(s) ['n_trian']"),
    ("data: {mpii: {downlaod: true}}\n", "bad.yaml:data.mpii: unknown key(s) ['downlaod']"),
    ("train: {weights: {hi_im: 1.0}}\n", "bad.yaml:train.weights: unknown key(s) ['hi_im']"),
    ("evaluate: {paths: {fer2013: 3}}\n", "bad.yaml:evaluate.paths.fer2013: expected a path"),
])
def test_show_exits_2_naming_the_key(tmp_path, text, message):
    bad = tmp_path / "bad.yaml"; bad.write_text(text)
    r = cli("--show", str(bad))
    assert r.returncode == 2 and message in r.stderr, r.stderr


@pytest.mark.parametrize("text, message", [
    ("data:\n  synthetic:\n    n_trian: 2400\n", "params.yaml:data.synthetic: unknown key(s) ['n_trian']"),
    ("base:\n  seeed: 1\n", "params.yaml:base: unknown key(s) ['seeed']"),
    ("data:\n  mpii:\n    val_fraction: lots\n", "params.yaml:data.mpii.val_fraction: expected float"),
    ("data:\n  synthetic:\n    p_closeup: 1.5\n", "params.yaml:data.synthetic: synth: p_closeup must be"),
    ("heatmaps:\n  parts: [head, tail]\n", "params.yaml:heatmaps.parts: unknown body part(s) ['tail']"),
    ("report:\n  headline_rule: best\n", "params.yaml:report.headline_rule: 'best' is not one of"),
    ("traing: {}\n", "params.yaml: unknown section(s) ['traing']"),
])
def test_params_file_strict_at_every_depth(tmp_path, text, message):
    p = tmp_path / "params.yaml"; p.write_text(text)
    with pytest.raises(ParamsError) as e: load_config(p)
    assert message in str(e.value)


def test_each_section_is_checked_once_per_read(checked_sections):
    cfg = load_config(PARAMS)
    assert sorted(checked_sections) == sorted(f"{PARAMS}:{s}" for s in cfg)  # train's check reads model and heatmaps: still once each
    assert load_config(cfg) is cfg and len(checked_sections) == len(cfg)  # a Config's sections are used as they are


@pytest.mark.parametrize("text, message", [
    ("train: {lr: 0.0}\n", "{preset}:train.lr: must be > 0"),
    ("train: {lrr: 0.1}\n", "{preset}:train: unknown key(s) ['lrr']"),
    ("heatmaps: {size: 96}\n", "{preset}:heatmaps.size is 96 but the model reads 128x128 images ({params}:model.image_size)"),
    ("model: {image_size: 96}\n", "{params}:heatmaps.size is 128 but the model reads 96x96 images ({preset}:model.image_size)"),
    ("data: {synthetic: {shift: 2.0}}\n", "{preset}:data.synthetic: synth: shift must be"),
    ("evaluate: {paths: {fer2013: 3}}\n", "{preset}:evaluate.paths.fer2013: expected a path"),
    ("evaluate: {paths: {fer2031: x.csv}}\n", "{preset}:evaluate.paths.fer2031: unknown dataset 'fer2031'"),
    ("train: {weights: {hi_imm: 1.0}}\n", "{preset}:train.weights: unknown key(s) ['hi_imm']"),
    ("train: {momentum: 0.5, optimizer: sgd}\nheatmaps: {parts: [head, tail]}\n", "{preset}:heatmaps.parts: unknown body part(s) ['tail']"),
])
def test_preset_errors_name_the_file_that_holds_the_key(tmp_path, text, message):
    bad = tmp_path / "bad.yaml"; bad.write_text(text)
    with pytest.raises(ParamsError) as e: resolve(PARAMS, bad)
    assert message.format(preset=bad, params=PARAMS) in str(e.value)


def test_params_file_errors_name_it_even_with_a_preset(tmp_path):
    p = tmp_path / "params.yaml"; p.write_text(PARAMS.read_text().replace("lr: 0.001", "lr: -1.0"))
    with pytest.raises(ParamsError) as e: resolve(p, ROOT / "presets/infonce.yaml")
    assert str(e.value).startswith(f"{p}:train.lr: must be > 0")


def test_a_preset_adds_datasets_after_the_paper_preset(tmp_path):
    "After `--apply presets/paper.yaml`, a second preset may add a dataset's path and options (free mappings, names checked); `dvc exp run` gets them with `+`."
    from focusclip.pipeline import apply_preset
    params = tmp_path / "params.yaml"; params.write_text(PARAMS.read_text())
    apply_preset(ROOT / "presets/paper.yaml", params)
    more = tmp_path / "more.yaml"
    more.write_text("evaluate:\n  datasets: [stanford40, facial_expressions]\n  paths: {facial_expressions: data/eval/fe, stanford40: /data/S40}\n"
                    "  options: {cub200: {split: test}}\n")
    args = preset_args(more, params)
    assert "+evaluate.paths.facial_expressions=data/eval/fe" in args and "evaluate.paths.stanford40=/data/S40" in args
    assert "+evaluate.options.cub200.split=test" in args and "evaluate.datasets=[stanford40, facial_expressions]" in args
    merged = apply_preset(more, params)
    assert merged["evaluate"]["paths"]["facial_expressions"] == "data/eval/fe" and merged["evaluate"]["paths"]["stanford40"] == "/data/S40"
    assert merged["evaluate"]["paths"]["fer2013"] == "data/eval/fer2013/fer2013.csv"  # the paper preset's other paths stay
    assert load_config(params)["evaluate"]["options"]["cub200"] == {"split": "test"}
    typo = tmp_path / "typo.yaml"; typo.write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(ParamsError, match=r"typo.yaml:train"): preset_args(typo, params)
