"""The course autoencoder next to diffusers' AutoencoderKL: the config built from ours constructs, has our
latent shape and scaling factor, and each difference it lists in words is checked on the two networks."""

import sys
import types

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffusers.models.attention_processor import Attention  # noqa: E402
from diffusers.models.resnet import ResnetBlock2D  # noqa: E402

from diffusion_course.bridge import INSTALL_HINT, autoencoder_kl_config  # noqa: E402
from diffusion_course.models import Autoencoder  # noqa: E402
from diffusion_course.models.autoencoder import LOGVAR_RANGE, ResidualBlock  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SWITCHES = ("mid_block_add_attention", "use_quant_conv", "use_post_quant_conv")


@pytest.fixture(scope="module", params=["default", "small"])
def pair(request):
    torch.manual_seed(0)
    if request.param == "default":
        ours = Autoencoder(scaling_factor=0.87)
    else:
        ours = Autoencoder(latent_channels=3, base_channels=8, groups=4, scaling_factor=1.6)
    config, differences = autoencoder_kl_config(ours)
    theirs = diffusers.AutoencoderKL(**config).eval()
    return ours.eval(), theirs, config, differences


def test_config_builds_a_model_with_our_latent_and_image_shapes(pair):
    ours, theirs, config, _ = pair
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        posterior = theirs.encode(x).latent_dist
        mean, logvar = ours.encode(x)
        assert posterior.mean.shape == posterior.logvar.shape == mean.shape == (2, *ours.latent_shape)
        assert mean.shape[2:] == (7, 7) and logvar.shape == mean.shape
        assert posterior.sample(generator=torch.Generator().manual_seed(0)).shape == mean.shape
        assert theirs.decode(posterior.mean).sample.shape == ours.decode(mean).shape == (2, 1, 28, 28)
    assert config["scaling_factor"] == ours.scaling_factor == theirs.config.scaling_factor
    assert config["latent_channels"] == ours.config["latent_channels"]
    assert config["in_channels"] == config["out_channels"] == ours.config["in_channels"]


def test_the_switches_remove_attention_and_the_quant_convs(pair):
    _, theirs, config, _ = pair
    for switch in SWITCHES:
        assert config[switch] is False
    assert theirs.quant_conv is None and theirs.post_quant_conv is None
    assert not any(isinstance(m, Attention) for m in theirs.modules())
    assert not any("attention" in name for name, _ in theirs.named_parameters())


def test_the_differences_are_sentences(pair):
    _, _, _, differences = pair
    assert isinstance(differences, list) and differences
    assert all(isinstance(d, str) and d.endswith(".") for d in differences)
    assert not any("has no `" in d for d in differences)  # this diffusers takes every switch


def test_the_listed_differences_hold(pair):
    ours, theirs, config, differences = pair
    text = " ".join(differences)
    resnets = lambda module, cls: sum(isinstance(m, cls) for m in module.modules())
    # mid-blocks and decoder depth: 3 + 2 residual blocks in diffusers' encoder, 2 + 3·2 in its decoder
    assert (resnets(ours.encoder, ResidualBlock), resnets(ours.decoder, ResidualBlock)) == (3, 3)
    assert (resnets(theirs.encoder, ResnetBlock2D), resnets(theirs.decoder, ResnetBlock2D)) == (5, 8)
    assert "four residual blocks more" in text and "2 residual blocks per resolution" in text
    # downsampling: asymmetric pad + padding 0 there, padding 1 here, and channels kept there
    down = theirs.encoder.down_blocks[0].downsamplers[0]
    assert down.padding == 0 and down.conv.padding == (0, 0) and ours.encoder[2].padding == (1, 1)
    c1, c2 = config["block_out_channels"][:2]
    assert (down.conv.in_channels, down.conv.out_channels) == (c1, c1)
    assert (ours.encoder[2].in_channels, ours.encoder[2].out_channels) == (c1, c2)
    assert theirs.encoder.down_blocks[1].resnets[0].conv_shortcut is not None
    assert "right and bottom edge" in text and "1×1 shortcut" in text
    # GroupNorm epsilon
    eps = lambda module: {m.eps for m in module.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert eps(theirs) == {1e-6} and eps(ours) == {1e-5} and "1e-6" in text
    # no state dict maps one-to-one
    ours_keys, theirs_keys = set(ours.state_dict()), set(theirs.state_dict())
    assert not ours_keys & theirs_keys
    assert sum(p.numel() for p in theirs.parameters()) > sum(p.numel() for p in ours.parameters())


def test_what_maps_the_posterior_is_split_and_clamped_alike(pair):
    """Both turn 2·latent_channels moments into (μ, log σ²) by a channel split and the same clamp."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    moments = torch.randn(2, 2 * pair[0].config["latent_channels"], 7, 7) * 30
    posterior = DiagonalGaussianDistribution(moments)
    mean, logvar = moments.chunk(2, dim=1)
    assert torch.equal(posterior.mean, mean)
    assert torch.equal(posterior.logvar, logvar.clamp(*LOGVAR_RANGE))


def test_a_diffusers_without_the_switches_names_the_extra_layers(monkeypatch):
    class OldAutoencoderKL:
        def __init__(self, in_channels=3, out_channels=3, latent_channels=4, scaling_factor=0.18215):
            pass

    fake = types.ModuleType("diffusers")
    fake.AutoencoderKL = OldAutoencoderKL
    monkeypatch.setitem(sys.modules, "diffusers", fake)
    config, differences = autoencoder_kl_config(Autoencoder())
    assert not set(SWITCHES) & set(config)
    for switch in SWITCHES:
        assert any(f"no `{switch}` switch" in d for d in differences), switch


def test_errors(monkeypatch):
    with pytest.raises(ValueError, match="expected a course Autoencoder"):
        autoencoder_kl_config(torch.nn.Linear(2, 2))
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` raise ImportError
    with pytest.raises(ImportError, match="pip install"):
        autoencoder_kl_config(Autoencoder())
    assert "diffusers" in INSTALL_HINT
