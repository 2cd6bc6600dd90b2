"""Losses against the references the original code used (pytorch-metric-learning, open_clip's ClipLoss)."""
import pytest
import torch
import torch.nn.functional as F
from focusclip.losses import NTXentLoss, InfoNCELoss, FocusCLIPLoss

pml = pytest.importorskip("pytorch_metric_learning.losses")


@pytest.mark.parametrize("batch,dim,temperature", [(2, 3, 0.5), (7, 16, 0.5), (32, 64, 0.5), (16, 8, 0.1), (5, 4, 2.0)])
def test_ntxent_matches_pytorch_metric_learning_value_and_gradient(batch, dim, temperature):
    g = torch.Generator().manual_seed(batch * 100 + dim)
    a0, b0 = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
    a1, b1 = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    a2, b2 = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    ours = NTXentLoss(temperature)(a1, b1)
    ref = pml.SelfSupervisedLoss(pml.NTXentLoss(temperature=temperature))(a2, b2)
    ours.backward(); ref.backward()
    assert abs(ours.item() - ref.item()) < 1e-5
    assert torch.allclose(a1.grad, a2.grad, atol=1e-6) and torch.allclose(b1.grad, b2.grad, atol=1e-6)


def test_ntxent_known_values():
    # two orthogonal pairs of identical vectors: each anchor has positive sim 1 and negatives sims 0, 0
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = -torch.log(torch.exp(torch.tensor(2.0)) / (torch.exp(torch.tensor(2.0)) + 2)).item()
    assert abs(NTXentLoss(0.5)(a, a.clone()).item() - expected) < 1e-6
    # the scale of the inputs does not matter (cosine similarity)
    b = torch.randn(4, 5)
    assert abs(NTXentLoss()(b, 3 * b).item() - NTXentLoss()(b, b).item()) < 1e-6


@pytest.mark.parametrize("batch", [2, 9, 33])
def test_infonce_matches_open_clip(batch):
    import open_clip
    g = torch.Generator().manual_seed(batch)
    a = F.normalize(torch.randn(batch, 12, generator=g), dim=-1)
    b = F.normalize(torch.randn(batch, 12, generator=g), dim=-1)
    s = torch.tensor(1 / 0.07)
    assert abs(InfoNCELoss()(a, b, s).item() - open_clip.ClipLoss()(a, b, s).item()) < 1e-5
    # perfectly aligned, well separated embeddings at a large scale give a loss near 0
    eye = torch.eye(batch)
    assert InfoNCELoss()(eye, eye, 100.0).item() < 1e-6


def test_focusclip_loss_terms_and_errors():
    g = torch.Generator().manual_seed(0)
    out = {k: torch.randn(6, 8, generator=g) for k in ("image_features", "text_features", "highlighted_features")}
    out["logit_scale"] = torch.tensor(20.0)
    r = FocusCLIPLoss("infonce", weights={"hi_img": 0.5})(out)
    i = InfoNCELoss()
    assert abs(r["hi_img"].item() - i(out["highlighted_features"], out["image_features"], 20.0).item()) < 1e-6
    assert abs(r["loss"].item() - (0.5 * r["hi_img"] + r["hi_txt"] + r["img_txt"]).item()) < 1e-5
    with pytest.raises(ValueError, match="at least 2"):
        NTXentLoss()(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(KeyError, match="no 'text_features'"):
        FocusCLIPLoss()({"image_features": out["image_features"]})
