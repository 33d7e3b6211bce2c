"""The KL autoencoder and latent diffusion: the VAE's equations, the latent scale, encode/decode, and a
latent checkpoint end to end (trained by the CLI, loaded with its autoencoder, sampled and decoded)."""

import json

import pytest
import torch
from torch.distributions import Normal
from torch.distributions import kl_divergence as torch_kl

from diffusion_course.checkpoints import load_checkpoint
from diffusion_course.cli import main
from diffusion_course.configs import get_config
from diffusion_course.data import synthetic_digits
from diffusion_course.evaluation import evaluate_checkpoint
from diffusion_course.generation import generate_samples
from diffusion_course.latent import (
    decode_latents,
    encode_latents,
    measure_scaling_factor,
    reconstruct,
    set_scaling_factor,
    train_autoencoder,
    vae_loss,
)
from diffusion_course.models import Autoencoder, build_model
from diffusion_course.models.autoencoder import kl_divergence, reconstruction_error, reparameterize

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def autoencoder():
    torch.manual_seed(0)
    return Autoencoder(latent_channels=3, base_channels=8).eval()


@pytest.fixture(scope="module")
def images():
    return synthetic_digits(12, torch.Generator().manual_seed(1))[0]


def test_shapes_and_config_round_trip(autoencoder, images):
    mean, logvar = autoencoder.encode(images)
    assert mean.shape == logvar.shape == (12, 3, 7, 7) and autoencoder.latent_shape == (3, 7, 7)
    assert autoencoder.decode(mean).shape == images.shape
    rebuilt = build_model("autoencoder", **autoencoder.config)
    assert rebuilt.config == autoencoder.config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=30), "image_size"),
        (dict(base_channels=12, groups=8), "groups"),
        (dict(scaling_factor=0.0), "scaling_factor"),
        (dict(latent_channels=0), "latent_channels"),
    ],
)
def test_bad_configs_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Autoencoder(**kwargs)


def test_bad_inputs_name_the_expected_shape(autoencoder):
    with pytest.raises(ValueError, match=r"x.*\(B, 1, 28, 28\)"):
        autoencoder.encode(torch.zeros(2, 1, 14, 14))
    with pytest.raises(ValueError, match=r"z.*\(B, 3, 7, 7\)"):
        autoencoder.decode(torch.zeros(2, 4, 7, 7))


def test_kl_matches_torch_distributions():
    mean, logvar = torch.randn(5, 2, 3, 3), torch.randn(5, 2, 3, 3)
    expected = torch_kl(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(kl_divergence(mean, logvar), expected, atol=1e-5)
    assert torch.equal(kl_divergence(torch.zeros(2, 4), torch.zeros(2, 4)), torch.zeros(2))


def test_reparameterize_is_mean_plus_sigma_noise_and_differentiable():
    mean = torch.randn(4, 2, 7, 7, requires_grad=True)
    logvar = torch.randn(4, 2, 7, 7, requires_grad=True)
    z = reparameterize(mean, logvar, torch.Generator().manual_seed(3))
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(z, mean + (0.5 * logvar).exp() * noise)
    z.sum().backward()
    assert torch.allclose(mean.grad, torch.ones_like(mean)) and torch.allclose(logvar.grad, 0.5 * (z - mean))


def test_vae_loss_is_reconstruction_plus_weighted_kl(autoencoder, images):
    loss, parts = vae_loss(autoencoder, images, 0.01, torch.Generator().manual_seed(5))
    mean, logvar = autoencoder.encode(images)
    z = reparameterize(mean, logvar, torch.Generator().manual_seed(5))
    reconstruction = reconstruction_error(autoencoder.decode(z), images).mean()
    kl = kl_divergence(mean, logvar).mean()
    assert loss.item() == pytest.approx((reconstruction + 0.01 * kl).item(), rel=1e-6)
    assert parts == pytest.approx({"reconstruction": reconstruction.item(), "kl": kl.item()}, rel=1e-6)


def test_scaling_factor_makes_sampled_latents_unit_variance(autoencoder, images):
    s = measure_scaling_factor(autoencoder, images, seed=7)
    generator = torch.Generator().manual_seed(7)
    z = reparameterize(*autoencoder.encode(images), generator)
    assert (s * z).double().std().item() == pytest.approx(1.0, rel=1e-5)


def test_encode_scales_and_decode_unscales(autoencoder, images):
    model = Autoencoder(latent_channels=3, base_channels=8)
    model.load_state_dict(autoencoder.state_dict())
    model.eval()
    set_scaling_factor(model, 2.5)
    assert model.config["scaling_factor"] == 2.5
    latents = encode_latents(model, images)
    assert torch.allclose(latents, 2.5 * model.encode(images)[0])
    assert torch.allclose(decode_latents(model, latents), reconstruct(model, images), atol=1e-5)
    assert torch.allclose(decode_latents(model, latents), model.decode(latents / 2.5), atol=1e-6)
    with pytest.raises(ValueError, match="scaling_factor"):
        set_scaling_factor(model, -1.0)


def test_train_autoencoder_is_seeded_and_sets_the_scale(images):
    config = get_config("test-vae").train.replace(steps=6)
    runs = []
    for _ in range(2):
        model = get_config("test-vae").build_model()
        result = train_autoencoder(model, images, config, kl_weight=1e-3, progress=False)
        runs.append(result.model)
        assert len(result.losses) == 6 and result.ema_model is None
    assert runs[0].scaling_factor != 1.0 and runs[0].scaling_factor == runs[1].scaling_factor
    for a, b in zip(runs[0].parameters(), runs[1].parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="kl_weight"):
        train_autoencoder(get_config("test-vae").build_model(), images, config, kl_weight=-1.0)


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("latent")
    assert main(["train", "--config", "test-vae", "--out", str(out), "--quiet", "--threads", "1"]) == 0
    assert main(["train", "--config", "test-latent", "--out", str(out), "--autoencoder",
                 str(out / "test-vae.json"), "--quiet", "--threads", "1"]) == 0  # fmt: skip
    return out


def test_latent_checkpoint_records_and_loads_its_autoencoder(latent_run):
    vae_info = json.loads((latent_run / "test-vae.json").read_text())
    info = json.loads((latent_run / "test-latent.json").read_text())
    assert info["autoencoder"] == {"name": "test-vae", "safetensors_sha256": vae_info["safetensors_sha256"]}
    assert vae_info["kl_weight"] == 1e-3 and vae_info["model"]["config"]["scaling_factor"] != 1.0
    assert info["load_average_at_start"] and info["machine"]
    checkpoint = load_checkpoint(latent_run / "test-latent.json", device="cpu")
    assert isinstance(checkpoint.autoencoder, Autoencoder)
    assert checkpoint.autoencoder.scaling_factor == vae_info["model"]["config"]["scaling_factor"]


def test_latent_samples_are_decoded_to_pixels(latent_run):
    checkpoint = load_checkpoint(latent_run / "test-latent.json", device="cpu")
    latents, labels = generate_samples(checkpoint, "ddim", 3, n=6, seed=2, decode=False)
    images, same_labels = generate_samples(checkpoint, "ddim", 3, n=6, seed=2)
    assert latents.shape == (6, 2, 7, 7) and images.shape == (6, 1, 28, 28)
    assert torch.equal(labels, same_labels)
    assert torch.allclose(images, decode_latents(checkpoint.autoencoder, latents), atol=1e-6)
    record = evaluate_checkpoint(checkpoint, "ddim", 3, n=20)
    assert record["nfe"] == 3 and 0.0 <= record["label_accuracy"] <= 1.0 and record["fd"] > 0


def test_a_replaced_autoencoder_is_refused(latent_run, tmp_path):
    for name in ("test-latent.json", "test-latent.safetensors"):
        (tmp_path / name).write_bytes((latent_run / name).read_bytes())
    assert main(["train", "--config", "test-vae", "--out", str(tmp_path), "--seed", "9", "--quiet"]) == 0
    with pytest.raises(ValueError, match="trained on the latents of autoencoder 'test-vae'"):
        load_checkpoint(tmp_path / "test-latent.json", device="cpu")


def test_the_autoencoder_flag_is_checked(latent_run, capsys):
    assert main(["train", "--config", "test-tiny", "--out", str(latent_run / "x"),
                 "--autoencoder", "mnist-vae", "--quiet"]) == 2  # fmt: skip
    assert "--autoencoder is for latent runs" in capsys.readouterr().err
    assert main(["train", "--config", "test-latent", "--out", str(latent_run / "y"),
                 "--autoencoder", str(latent_run / "test-latent.json"), "--quiet"]) == 2  # fmt: skip
    assert "is a unet checkpoint, not an autoencoder" in capsys.readouterr().err
    assert main(["train", "--config", "test-vae", "--out", str(latent_run / "z"), "--resume"]) == 2
    assert "--resume is for diffusion runs" in capsys.readouterr().err
