import json
import math

import pytest
import torch

from diffusion_course.configs import UNET_FULL, UNET_QUICK
from diffusion_course.models import (
    MLP,
    MODEL_KINDS,
    Classifier,
    TinyUNet,
    UNet,
    build_model,
    count_parameters,
    model_kind,
    timestep_embedding,
)

T = 1000


pytestmark = pytest.mark.usefixtures("one_thread")


SMALL_UNET = dict(base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1, attention_resolutions=(7,))


def randomize_zero_init(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Zero-initialised layers hide the conditioning at init; give them random values for these tests."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def image_models():
    torch.manual_seed(0)
    return [TinyUNet(base_channels=8, time_dim=16), UNet(**SMALL_UNET), UNet(**SMALL_UNET, num_classes=10)]


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_output_shape_matches_input_for_every_model(batch):
    x = torch.randn(batch, 1, 28, 28)
    for t in (torch.zeros(batch, dtype=torch.long), torch.full((batch,), T - 1)):
        for model in image_models():
            assert model(x, t).shape == x.shape
        mlp = MLP(hidden=16, depth=1)
        assert mlp(torch.randn(batch, 2), t).shape == (batch, 2)


def test_int_timestep_broadcasts_and_matches_tensor():
    model = randomize_zero_init(UNet(**SMALL_UNET))
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(model(x, 5), model(x, torch.tensor([5, 5])))


def test_timestep_changes_the_output():
    for model in [randomize_zero_init(m) for m in image_models()]:
        x = torch.randn(2, 1, 28, 28)
        out0, out1 = model(x, torch.tensor([0, 0])), model(x, torch.tensor([T - 1, T - 1]))
        assert not torch.allclose(out0, out1)


def test_unet_starts_at_zero_output():
    """The final conv is zero-initialised, so an untrained UNet predicts ε̂ = 0."""
    out = UNet(**SMALL_UNET, num_classes=10)(torch.randn(2, 1, 28, 28), torch.tensor([3, 900]))
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_conditioning_changes_output_and_null_class_equals_none(kind):
    torch.manual_seed(0)
    if kind == "unet":
        model, x = UNet(**SMALL_UNET, num_classes=10), torch.randn(3, 1, 28, 28)
    else:
        model, x = MLP(hidden=16, depth=2, num_classes=10), torch.randn(3, 2)
    randomize_zero_init(model)
    t = torch.tensor([10, 500, 990])
    out_a = model(x, t, labels=torch.tensor([0, 1, 2]))
    out_b = model(x, t, labels=torch.tensor([3, 4, 5]))
    assert not torch.allclose(out_a, out_b)
    # each row only depends on its own label
    out_mixed = model(x, t, labels=torch.tensor([0, 4, 2]))
    assert torch.allclose(out_mixed[0], out_a[0]) and torch.allclose(out_mixed[1], out_b[1])
    null = torch.full((3,), 10)
    assert torch.equal(model(x, t), model(x, t, labels=null))
    assert not torch.allclose(model(x, t), out_a)


@pytest.mark.parametrize(
    "labels, match",
    [
        (torch.tensor([0, 11]), "0..9"),
        (torch.tensor([-1, 3]), "0..9"),
        (torch.tensor([1, 2, 3]), r"shape \(2,\)"),
        (torch.tensor([[1, 2]]), r"shape \(2,\)"),
        (torch.tensor([1.0, 2.0]), "integer"),
        ([1, 2], "integer"),
    ],
)
def test_bad_labels_raise_clear_errors(labels, match):
    model = UNet(**SMALL_UNET, num_classes=10)
    with pytest.raises(ValueError, match=match):
        model(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), labels=labels)


def test_labels_on_unconditional_models_raise():
    labels = torch.tensor([1, 2])
    for model in image_models()[:2]:
        with pytest.raises(ValueError, match="unconditional"):
            model(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), labels=labels)
    with pytest.raises(ValueError, match="unconditional"):
        MLP(hidden=8, depth=1)(torch.randn(2, 2), torch.tensor([1, 2]), labels=labels)


def test_bad_timesteps_and_inputs_raise():
    model = UNet(**SMALL_UNET)
    x = torch.randn(2, 1, 28, 28)
    with pytest.raises(ValueError, match="integer timestep"):
        model(x, torch.tensor([0.5, 0.2]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        model(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        model(torch.randn(2, 1, 32, 32), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="divisible by 4"):
        TinyUNet(base_channels=8)(torch.randn(1, 1, 30, 30), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        MLP(hidden=8, depth=1)(torch.randn(2, 3), torch.tensor([1, 2]))


def test_bad_constructor_arguments_raise():
    with pytest.raises(ValueError, match="groups"):
        UNet(base_channels=12, groups=8)
    with pytest.raises(ValueError, match="num_classes"):
        UNet(num_classes=0)
    with pytest.raises(ValueError, match="image_size"):
        UNet(image_size=30, channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="base_channels"):
        TinyUNet(base_channels=12)
    with pytest.raises(ValueError, match="dropout"):
        UNet(dropout=1.5)


def test_timestep_embedding_formula():
    emb = timestep_embedding(torch.tensor([0, 1, 7]), 4)
    # d = 4: ω = (1, 10000^(−1/2) = 0.01); emb = [sin(tω_0), sin(tω_1), cos(tω_0), cos(tω_1)]
    expected = torch.tensor(
        [[math.sin(t), math.sin(0.01 * t), math.cos(t), math.cos(0.01 * t)] for t in (0, 1, 7)]
    )
    assert torch.allclose(emb, expected, atol=1e-6)
    odd = timestep_embedding(torch.arange(5), 7)
    assert odd.shape == (5, 7) and torch.equal(odd[:, -1], torch.zeros(5))
    many = timestep_embedding(torch.arange(T), 64)
    assert torch.cdist(many, many).add(torch.eye(T)).min() > 1e-3  # every step has its own embedding


def test_parameter_counts_are_in_the_stated_ranges():
    quick = UNet(**UNET_QUICK)
    assert 500_000 <= count_parameters(quick) <= 1_000_000
    assert count_parameters(UNet(**UNET_FULL)) > 3 * count_parameters(quick)
    assert 100_000 <= count_parameters(TinyUNet()) <= 500_000
    assert count_parameters(MLP()) < 200_000
    model = MLP(hidden=8, depth=1)
    model.input.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - (2 * 8 + 8)


def test_classifier_shapes_and_input_check():
    model = Classifier()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert model.features(x).shape == (3, 128)
    assert model(x).shape == (3, 10)
    assert torch.allclose(model(x), model.head(model.features(x)))
    with pytest.raises(ValueError, match="28, 28"):
        model(torch.rand(3, 1, 32, 32))


@pytest.mark.parametrize(
    "kind, config",
    [
        ("tiny_unet", dict(base_channels=8, time_dim=16)),
        ("unet", dict(SMALL_UNET, num_classes=10, dropout=0.1)),
        ("mlp", dict(hidden=16, depth=2, num_classes=4)),
        ("classifier", dict(width=4, feature_dim=8)),
    ],
)
def test_build_model_round_trips_through_json(kind, config):
    torch.manual_seed(1)
    model = build_model(kind, **config)
    assert model_kind(model) == kind and isinstance(model, MODEL_KINDS[kind])
    stored = json.loads(json.dumps({"kind": kind, "config": model.config}))
    torch.manual_seed(1)
    rebuilt = build_model(stored["kind"], **stored["config"])
    assert rebuilt.config == model.config
    for (name_a, a), (name_b, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert name_a == name_b and torch.equal(a, b)


def test_build_model_rejects_unknown_kind_and_keys():
    known = "known model kinds are autoencoder, classifier, flow, mlp, tiny_unet, unet, v_prediction"
    with pytest.raises(ValueError, match=known):
        build_model("transformer")
    with pytest.raises(ValueError, match="not a valid configuration for UNet"):
        build_model("unet", channels=3)
    with pytest.raises(ValueError, match="expected one of"):
        model_kind(torch.nn.Linear(2, 2))
