"""FocusCLIP model: gradients for DDP, precision, the paper and open_clip configurations, save/load."""
import json, os
import pytest
import torch
import torch.nn.functional as F
from focusclip.model import (create_model, create_model_from_params, save_model, load_model, num_params, MODEL_DEFAULTS, ModelOptions,
                             text_trim_mode)
from focusclip.losses import FocusCLIPLoss


def _batch(m, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = m.image_size
    x = torch.rand(b, 3, s, s, generator=g)
    h = torch.rand(b, s, s, generator=g)
    t = m.tokenize([f"a person number {i} raises the left arm" for i in range(b)])
    return x, t, h


@pytest.mark.parametrize("use_heatmap,shared", [(True, True), (True, False), (False, True)])
def test_every_trainable_parameter_gets_a_gradient_with_infonce(use_heatmap, shared):
    # DDP (without find_unused_parameters) needs every trainable parameter in the graph
    torch.manual_seed(0)
    m = create_model("tiny", use_heatmap=use_heatmap, shared_encoder=shared)
    x, t, h = _batch(m)
    FocusCLIPLoss("infonce", use_heatmap=use_heatmap)(m(x, t, h))["loss"].backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_ntxent_leaves_only_logit_scale_without_gradient():
    m = create_model("tiny")
    x, t, h = _batch(m)
    FocusCLIPLoss("ntxent")(m(x, t, h))["loss"].backward()
    assert [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None] == ["clip.logit_scale"]


def test_alpha_moves_with_training_and_stays_in_range():
    torch.manual_seed(0)
    m = create_model("tiny")
    for p in m.clip.parameters(): p.requires_grad_(False)
    opt = torch.optim.SGD([m.alpha_param], lr=10.0)
    x, t, h = _batch(m, 8)
    for _ in range(2):
        opt.zero_grad(); FocusCLIPLoss()(m(x, t, h))["loss"].backward(); opt.step()
    assert m.alpha.item() != pytest.approx(0.5, abs=1e-4)
    assert 0.0 < m.alpha.item() < 1.0


def test_bf16_autocast_forward_on_cpu():
    m = create_model("tiny")
    x, t, h = _batch(m)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x, t, h)
        loss = FocusCLIPLoss()(out)["loss"]
    assert torch.isfinite(loss) and out["highlighted_features"].shape == (4, 128)


def test_params_section_builds_each_variant():
    p = dict(MODEL_DEFAULTS, alpha_mode="free", shared_encoder=False)
    assert create_model_from_params(p, use_heatmap=True).visual_hi is not None
    with pytest.raises(Exception, match="alpha_mod"):
        create_model_from_params({"alpha_mod": "free"})


def test_baseline_round_trip_keeps_variant(tmp_path):
    m = create_model("tiny", use_heatmap=False).eval()
    x, t, _ = _batch(m)
    save_model(m, tmp_path)
    assert json.loads((tmp_path / "focusclip.json").read_text())["variant"] == "clip"
    m2 = load_model(tmp_path).eval()
    assert m2.use_heatmap is False
    assert torch.allclose(m2.encode_image(x), m.encode_image(x), atol=1e-6)



def test_saved_options_load_back_whole(tmp_path):
    "Every option survives save_model/load_model (freeze_bn and the frozen towers act on the loaded model); folders whose options lack `config` load too."
    opts = ModelOptions("tiny", shared_encoder=False, alpha_mode="clamp", alpha_init=0.3, normalize="openai", lock_text=True,
                        trim_text=False, unlocked_image_groups=0, freeze_bn=True, context_length=32)
    torch.manual_seed(0)
    m = create_model(opts).eval()
    x, t, h = _batch(m)
    with torch.no_grad(): ref = m(x, t, h)
    save_model(m, tmp_path)
    frozen = lambda model: [n for n, p in model.named_parameters() if not p.requires_grad]
    for _ in range(2):
        m2 = load_model(tmp_path)
        assert m2.options == opts and m2.name == "tiny" and m2.context_length == 32
        assert frozen(m2) == frozen(m) and "clip.visual.conv1.weight" in frozen(m2) and "clip.token_embedding.weight" in frozen(m2)
        bn = [b for b in m2.train().modules() if isinstance(b, torch.nn.BatchNorm2d)]
        assert bn and not any(b.training for b in bn) and m2.training  # freeze_bn
        with torch.no_grad(): out = m2.eval()(x, t, h)
        assert all(torch.allclose(out[k], ref[k], atol=1e-6) for k in ref)
        # the focusclip.json that save_model wrote before it saved `config`: the name stands for it
        meta = json.loads((tmp_path / "focusclip.json").read_text())
        meta["options"] = {k: meta["options"][k] for k in ("pretrained", "use_heatmap", "shared_encoder", "learn_alpha", "alpha_init", "alpha_mode",
                           "normalize", "lock_text", "text_pooling", "trim_text", "unlocked_image_groups", "freeze_bn", "image_size",
                           "context_length", "mean", "std")}
        (tmp_path / "focusclip.json").write_text(json.dumps(meta))
    meta["options"]["colour"] = "red"
    (tmp_path / "focusclip.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="focusclip.json: options: .*colour"):
        load_model(tmp_path)

@pytest.mark.slow
def test_paper_configuration_builds_offline_and_reloads_through_open_clip(tmp_path):
    import open_clip
    torch.manual_seed(0)
    m = create_model("paper", text_pooling="mean_all").eval()
    assert m.image_size == 224 and m.context_length == 512
    assert 190e6 < num_params(m) < 200e6
    tok = m.tokenize(["A person is running.", "a person sitting"])
    assert tok.shape == (2, 512) and tok[0, 0].item() == 101 and tok[0, -1].item() == 0  # [CLS] ... [PAD]
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        ref_img, ref_txt = m.encode_image(x), m.encode_text(tok)
    save_model(m, tmp_path)
    oc = open_clip.create_model(f"local-dir:{tmp_path}").eval()  # offline: the HF config and tokenizer are in the folder
    with torch.no_grad():
        assert torch.allclose(F.normalize(oc.encode_image(x), dim=-1), ref_img, atol=1e-5)
        assert torch.allclose(F.normalize(oc.encode_text(tok), dim=-1), ref_txt, atol=1e-5)
    assert torch.equal(open_clip.get_tokenizer(f"local-dir:{tmp_path}")(["A person is running."]), tok[:1])


@pytest.mark.slow
def test_open_clip_name_from_scratch(tmp_path):
    import open_clip
    m = create_model("ViT-B-32", normalize="openai").eval()
    assert m.image_size == 224 and m.context_length == 77
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad(): ref = m.encode_image(x)
    save_model(m, tmp_path)
    cfg = json.loads((tmp_path / "open_clip_config.json").read_text())
    assert cfg["preprocess_cfg"]["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    m2 = load_model(tmp_path).eval()
    with torch.no_grad(): assert torch.allclose(m2.encode_image(x), ref, atol=1e-5)


def test_trim_text_is_exact_for_a_custom_text_tower(tmp_path):
    import copy
    from focusclip.towers import MODEL_CONFIGS
    cfg = dict(copy.deepcopy(MODEL_CONFIGS["tiny"]), custom_text=True)
    torch.manual_seed(0)
    m = create_model(cfg).eval()
    assert type(m.clip).__name__ == "CustomTextCLIP" and text_trim_mode(m.clip) == "tower"
    short = m.tokenize(["a cyclist", "a person sitting on a chair"])
    with torch.no_grad():
        assert torch.allclose(m.encode_text(short), m.clip.encode_text(short, normalize=True), atol=1e-5)
    assert m.clip.text.attn_mask.shape == (77, 77)  # restored after the call
    save_model(m, tmp_path)
    m2 = load_model(tmp_path).eval()
    with torch.no_grad(): assert torch.allclose(m2.encode_text(short), m.encode_text(short), atol=1e-6)


def test_trim_text_gradients_match_untrimmed():
    torch.manual_seed(0)
    m = create_model("tiny")
    t = m.tokenize(["a person running", "a dancer with raised arms"])
    m.encode_text(t).sum().backward()
    g1 = m.clip.token_embedding.weight.grad.clone(); m.zero_grad()
    m.clip.encode_text(t, normalize=True).sum().backward()
    assert torch.allclose(g1, m.clip.token_embedding.weight.grad, rtol=1e-5, atol=1e-4)  # float rounding only
    seen = []
    hk = m.clip.transformer.register_forward_hook(lambda mod, i, o: seen.append(i[0].shape[1]))
    m.encode_text(t); m.clip.encode_text(t); hk.remove()
    assert seen == [7, 77]  # [SOT] a dancer with raised arms [EOT]: 7 positions instead of 77
