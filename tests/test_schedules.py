import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_course.schedules import (
    NoiseSchedule,
    cosine_schedule,
    linear_schedule,
    make_schedule,
    scaled_linear_schedule,
)


def test_linear_endpoints_and_derived_quantities():
    s = linear_schedule(1000)
    assert s.T == 1000
    assert s.betas[0].item() == pytest.approx(1e-4)
    assert s.betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(s.alphas, 1 - s.betas)
    # ᾱ_t is the running product, computed independently here with a loop
    running, expected = 1.0, []
    for b in s.betas.tolist():
        running *= 1 - b
        expected.append(running)
    assert torch.allclose(s.alpha_bar, torch.tensor(expected, dtype=torch.float64), rtol=1e-10)
    assert s.alpha_bar_prev[0] == 1.0 and torch.equal(s.alpha_bar_prev[1:], s.alpha_bar[:-1])
    assert torch.allclose(s.snr, s.alpha_bar / (1 - s.alpha_bar))
    assert torch.allclose(s.log_snr, torch.log(s.snr))
    assert torch.allclose(s.sigmas**2, 1 / s.snr)
    assert (s.alpha_bar.diff() < 0).all()


def test_posterior_variance_formula_and_first_step():
    s = linear_schedule(50)
    t = 10
    expected = (1 - s.alpha_bar[t - 1]) / (1 - s.alpha_bar[t]) * s.betas[t]
    assert s.posterior_variance[t].item() == pytest.approx(expected.item())
    assert s.posterior_variance[0].item() == 0.0  # q(x_{-1}|x_0, x_t) is a point mass at x_0
    assert (s.posterior_variance[1:] <= s.betas[1:]).all()


def test_cosine_matches_its_formula():
    T, s_off = 1000, 0.008
    s = cosine_schedule(T, s=s_off)
    f = lambda u: math.cos((u / T + s_off) / (1 + s_off) * math.pi / 2) ** 2
    for t in (0, 1, 10, 500, 990):
        # below the clip, ᾱ_t = f(t+1)/f(0) exactly
        assert s.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert s.betas.max().item() == pytest.approx(0.999)
    assert s.betas[-1].item() == pytest.approx(0.999)


def test_scaled_linear_is_linear_in_sqrt_beta():
    s = scaled_linear_schedule(1000)
    root = s.betas.sqrt()
    assert torch.allclose(root.diff(), root.diff()[0].expand(999), rtol=1e-6)
    assert s.betas[0].item() == pytest.approx(0.00085)
    assert s.betas[-1].item() == pytest.approx(0.012)


def test_terminal_signal_matches_lin_et_al_table():
    # Lin et al. (2023), Table 1: √ᾱ_T of common schedules
    assert linear_schedule().terminal_signal() == pytest.approx(0.0064, abs=1e-4)
    assert cosine_schedule().terminal_signal() == pytest.approx(5e-5, rel=0.05)
    assert scaled_linear_schedule().terminal_signal() == pytest.approx(0.068, abs=1e-3)


@pytest.mark.parametrize("name", ["linear", "cosine", "scaled_linear"])
def test_zero_terminal_snr_rescale(name):
    s = make_schedule(name)
    r = s.rescale_zero_terminal_snr()
    assert r.alpha_bar[-1].item() == pytest.approx(0.0, abs=1e-20)
    assert r.betas[-1].item() == pytest.approx(1.0)
    assert r.alpha_bar[0].item() == pytest.approx(s.alpha_bar[0].item(), rel=1e-12)
    # √ᾱ is shifted and scaled: an affine map of the original
    a, b = s.alpha_bar.sqrt(), r.alpha_bar.sqrt()
    slope = (b[0] - b[-1]) / (a[0] - a[-1])
    assert torch.allclose(b, slope * (a - a[-1]), atol=1e-12)
    assert make_schedule(name, zero_terminal_snr=True).alpha_bar[-1] == r.alpha_bar[-1]


def test_q_sample_closed_form_exact_values():
    s = linear_schedule(100)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 1, 4, 4, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 50, 99])
    xt = s.q_sample(x0, t, noise)
    for i in range(3):
        ab = s.alpha_bar[t[i]].item()
        assert torch.allclose(xt[i], math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * noise[i], atol=1e-6)
    assert torch.equal(s.q_sample(x0, 7, noise), s.q_sample(x0, torch.full((3,), 7), noise))


def test_closed_form_equals_step_by_step_chain_in_distribution():
    """Running the chain t+1 times gives the same distribution as one q_sample jump."""
    s = linear_schedule(200)
    n, t = 20000, 120
    x0 = torch.full((n, 2), 0.7, dtype=torch.float64)
    x0[:, 1] = -1.3
    chain = s.q_chain(x0, t, generator=torch.Generator().manual_seed(1))
    jump = s.q_sample(x0, t, generator=torch.Generator().manual_seed(2))
    ab = s.alpha_bar[t].item()
    expected_mean = math.sqrt(ab) * x0[0]
    tol = 4 * math.sqrt(1 / n)
    for sample in (chain, jump):
        assert torch.allclose(sample.mean(0), expected_mean, atol=tol)
        assert torch.allclose(sample.var(0), torch.full((2,), 1 - ab, dtype=torch.float64), atol=0.05)
    assert torch.allclose(chain.mean(0), jump.mean(0), atol=2 * tol)


def test_q_sample_is_reproducible_with_a_generator():
    s = cosine_schedule(10)
    x0 = torch.zeros(4, 3)
    a = s.q_sample(x0, 5, generator=torch.Generator().manual_seed(3))
    b = s.q_sample(x0, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(["linear", "cosine", "scaled_linear"]),
    T=st.integers(2, 1500),
    zero=st.booleans(),
)
def test_schedule_invariants(name, T, zero):
    s = make_schedule(name, T, zero_terminal_snr=zero)
    assert s.T == T
    assert ((s.betas > 0) & (s.betas <= 1)).all()
    assert (s.alpha_bar.diff() <= 0).all()
    assert 0 <= s.alpha_bar[-1] < s.alpha_bar[0] <= 1
    assert (s.posterior_variance >= 0).all()
    assert torch.isfinite(s.posterior_variance).all()


# --- bad input: a ValueError that names the parameter -------------------------------------------------


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: linear_schedule(0), "T"),
        (lambda: linear_schedule(2.5), "T"),
        (lambda: cosine_schedule(-3), "T"),
        (lambda: linear_schedule(10, beta_start=0.0), "beta_start"),
        (lambda: linear_schedule(10, beta_end=1.5), "beta_end"),
        (lambda: cosine_schedule(10, s=-1.0), "s"),
        (lambda: make_schedule("sigmoid"), "name"),
        (lambda: NoiseSchedule(torch.tensor([0.1, 1.2])), "betas[1]"),
        (lambda: NoiseSchedule(torch.tensor([0.1, 0.0, 0.2])), "betas[1]"),
        (lambda: NoiseSchedule(torch.tensor([1.0, 0.5])), "betas[0]"),
        (lambda: NoiseSchedule(torch.tensor([[0.1, 0.2]])), "betas"),
        (lambda: NoiseSchedule(torch.tensor([1, 2])), "betas"),
        (lambda: NoiseSchedule(torch.tensor([0.1, float("nan")])), "betas"),
    ],
)
def test_bad_schedule_input(call, name):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value).startswith(name)


@pytest.mark.parametrize(
    "t, fragment",
    [
        (torch.tensor([0, 10]), "0..9"),
        (torch.tensor([-1, 0]), "0..9"),
        (torch.tensor([0.5, 1.0]), "integer"),
        (torch.tensor([1, 2, 3]), "shape (2,)"),
        (10, "0..9"),
        ("3", "int"),
    ],
)
def test_bad_timesteps(t, fragment):
    s = linear_schedule(10)
    with pytest.raises(ValueError, match="^t") as err:
        s.q_sample(torch.zeros(2, 3), t)
    assert fragment in str(err.value)


def test_bad_x0_and_noise():
    s = linear_schedule(10)
    with pytest.raises(ValueError, match="^x0.*floating"):
        s.q_sample(torch.zeros(2, 3, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="^x0"):
        s.q_sample([[0.0]], 1)
    with pytest.raises(ValueError, match="^noise.*same shape"):
        s.q_sample(torch.zeros(2, 3), 1, noise=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="^t"):
        s.q_chain(torch.zeros(2, 3), 10)


def test_q_sample_noise_scale_is_exact_in_float32_near_t0():
    """1 − ᾱ_0 rounded in float32 would scale the noise 1.7e-4 too much; the roots are taken in float64."""
    s = linear_schedule(1000)
    g = torch.Generator().manual_seed(1)
    x0 = torch.zeros(1000, 1, 2, 2)
    noise = torch.randn(x0.shape, generator=g)
    xt = s.q_sample(x0, 0, noise)
    exact = (1.0 - s.alpha_bar[0]).sqrt() * noise.double()
    assert (xt.double() - exact).abs().max() / exact.abs().max() < 1e-6
