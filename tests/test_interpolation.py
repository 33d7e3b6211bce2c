"""slerp and lerp: endpoints, the norm that slerp keeps and lerp loses, the θ = 0 limit, shapes, bad input."""

import math

import pytest
import torch

from diffusion_course.interpolation import angle, interpolate, lerp, relative_norm, slerp


def gaussians(n=4, shape=(1, 28, 28), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g, dtype=dtype), torch.randn(
        (n, *shape), generator=g, dtype=dtype
    )


@pytest.mark.parametrize("fn", [slerp, lerp])
def test_endpoints(fn):
    z0, z1 = gaussians()
    torch.testing.assert_close(fn(z0, z1, 0.0), z0, rtol=0, atol=1e-12)
    torch.testing.assert_close(fn(z0, z1, 1.0), z1, rtol=0, atol=1e-12)
    torch.testing.assert_close(fn(z0, z1, 1), z1, rtol=0, atol=1e-12)  # an int α is fine


def test_slerp_is_the_formula():
    z0, z1 = gaussians(n=3, shape=(5,))
    alpha = 0.3
    for i in range(3):
        a, b = z0[i], z1[i]
        theta = math.acos(float(a @ b / (a.norm() * b.norm())))
        expected = (math.sin((1 - alpha) * theta) * a + math.sin(alpha * theta) * b) / math.sin(theta)
        torch.testing.assert_close(slerp(z0, z1, alpha)[i], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lerp(z0, z1, alpha), 0.7 * z0 + 0.3 * z1)


def test_slerp_keeps_the_norm_of_equal_norm_inputs_and_lerp_does_not():
    z0, z1 = gaussians(n=8)
    z1 = z1 / z1.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * z0.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    for alpha in (0.1, 0.25, 0.5, 0.9):
        torch.testing.assert_close(relative_norm(slerp(z0, z1, alpha)), relative_norm(z0), rtol=1e-10, atol=0)
    # two independent Gaussians in D = 784 dimensions are nearly orthogonal, so the lerp midpoint has
    # norm ≈ √(1/2) of theirs: ≈ 0.71 √D = 19.8, about 12 standard deviations of ‖z‖ (≈ 0.71) below √D = 28
    mid_lerp = relative_norm(lerp(z0, z1, 0.5))
    assert torch.allclose(mid_lerp, torch.full_like(mid_lerp, 0.5**0.5), atol=0.04), mid_lerp
    assert (relative_norm(z0) - mid_lerp).min() > 0.2
    shell_std = 0.5**0.5 / 784**0.5  # std of ‖z‖/√D for z ~ N(0, I_D)
    assert ((relative_norm(z0) - mid_lerp) / shell_std).min() > 8


def test_slerp_path_of_unequal_norms_stays_between_them():
    z0, z1 = gaussians(n=1, shape=(200,))
    z1 = 2 * z1
    path = slerp(z0, z1, torch.linspace(0, 1, 11))
    norms = path.norm(dim=1)
    assert norms[0] == pytest.approx(float(z0.norm())) and norms[-1] == pytest.approx(float(z1.norm()))
    assert (norms >= 0.99 * float(z0.norm())).all() and (norms <= 1.01 * float(z1.norm())).all()


def test_identity_at_zero_angle_falls_back_to_lerp():
    z0, _ = gaussians(n=2)
    for z1 in (z0.clone(), 3.0 * z0):  # θ = 0: same direction, any norms
        out = slerp(z0, z1, 0.4)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, lerp(z0, z1, 0.4), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(slerp(z0, z0, 0.7), z0, rtol=1e-12, atol=1e-12)
    # a tiny angle: slerp → lerp continuously
    z1 = z0 + 1e-4 * gaussians(n=2, seed=1)[0]
    torch.testing.assert_close(slerp(z0, z1, 0.5), lerp(z0, z1, 0.5), rtol=1e-6, atol=1e-6)


def test_path_shapes_and_per_sample_angles():
    z0, z1 = gaussians(n=1)
    alphas = torch.linspace(0, 1, 7)
    path = slerp(z0, z1, alphas)
    assert path.shape == (7, 1, 28, 28) and path.dtype == z0.dtype
    torch.testing.assert_close(path[3], slerp(z0, z1, float(alphas[3]))[0])
    # per-sample α with a batch, and the angle is taken per sample, not over the whole batch
    z0, z1 = gaussians(n=3, shape=(6,))
    z1[1] = z0[1] + 0.01 * z1[1]  # sample 1 almost parallel, the others ~ 90°
    theta = angle(z0, z1)
    assert theta[1] < 0.05 and (theta[[0, 2]] > 0.5).all()
    out = slerp(z0, z1, torch.tensor([0.2, 0.5, 0.8]))
    for i, a in enumerate((0.2, 0.5, 0.8)):
        torch.testing.assert_close(out[i : i + 1], slerp(z0[i : i + 1], z1[i : i + 1], a))
    # float32 in, float32 out
    assert slerp(z0.float(), z1.float(), 0.5).dtype == torch.float32
    torch.testing.assert_close(interpolate(z0, z1, 0.5, "lerp"), lerp(z0, z1, 0.5))
    torch.testing.assert_close(interpolate(z0, z1, 0.5), slerp(z0, z1, 0.5))


def test_quarter_circle_by_hand():
    e0, e1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    torch.testing.assert_close(slerp(e0, e1, 0.5), torch.tensor([[0.5**0.5, 0.5**0.5]]))
    torch.testing.assert_close(slerp(e0, e1, 1 / 3), torch.tensor([[math.cos(math.pi / 6), 0.5]]))
    torch.testing.assert_close(lerp(e0, e1, 0.5), torch.tensor([[0.5, 0.5]]))


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda z0, z1: slerp(z0, z1, 1.5), ["alpha=1.5", "[0, 1]"]),
        (lambda z0, z1: lerp(z0, z1, -0.1), ["alpha=-0.1", "[0, 1]"]),
        (lambda z0, z1: slerp(z0, z1, torch.tensor([0.5, float("nan")])), ["alpha=nan"]),
        (lambda z0, z1: slerp(z0, z1, "half"), ["alpha", "number"]),
        (lambda z0, z1: slerp(z0, z1[:, :, :5], 0.5), ["z1", "per-sample shape"]),
        (lambda z0, z1: slerp(z0, z1, torch.rand(3)), ["batch sizes"]),
        (lambda z0, z1: slerp(z0, -2 * z0, 0.5), ["opposite directions"]),
        (lambda z0, z1: slerp(z0, torch.zeros_like(z0), 0.5), ["non-zero"]),
        (lambda z0, z1: slerp(z0.long(), z1, 0.5), ["z0", "floating-point"]),
        (lambda z0, z1: interpolate(z0, z1, 0.5, "cubic"), ["method='cubic'", "slerp"]),
    ],
)
def test_bad_input_is_named(call, words):
    z0, z1 = gaussians(n=2)
    with pytest.raises(ValueError) as err:
        call(z0, z1)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
