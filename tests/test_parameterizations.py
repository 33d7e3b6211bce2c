import math
import re

import pytest
import torch

from diffusion_course import parameterizations as P
from diffusion_course.oracle import GaussianMixture, GaussianMixtureOracle, toy_mixture
from diffusion_course.schedules import cosine_schedule, linear_schedule

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=gen(seed), dtype=F64)


def levels(kind, B, low=0.02, high=0.98, seed=1):
    """ᾱ or t as a float, a 0-d tensor, one per sample (B,), or (B, 1, 1, 1)."""
    per_sample = low + (high - low) * torch.rand(B, generator=gen(seed), dtype=F64)
    return {
        "float": 0.37,
        "0-d": torch.tensor(0.37, dtype=F64),
        "(B,)": per_sample,
        "(B,1,1,1)": per_sample.reshape(B, 1, 1, 1),
    }[kind]


def shaped(value, like):
    """value as a number or tensor broadcastable against like, the way the module reads it."""
    if isinstance(value, float):
        return value
    return value.reshape(-1, *([1] * (like.ndim - 1))) if value.ndim == 1 else value


def mixture_1d(means, sds, weights):
    return GaussianMixture(
        torch.tensor(means, dtype=F64)[:, None],
        (torch.tensor(sds, dtype=F64) ** 2)[:, None, None],
        torch.tensor(weights, dtype=F64),
    )


def path_mixture(m, t):
    """The law of (1−t) x₀ + t ε for x₀ ~ m."""
    eye = torch.eye(m.D, dtype=F64)
    return GaussianMixture((1 - t) * m.means, (1 - t) ** 2 * m.covs + t**2 * eye, m.weights)


KINDS = ["float", "0-d", "(B,)", "(B,1,1,1)"]


# --- round trips --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_vp_round_trips(kind):
    x_t, eps = randn(4, 3, 5, 5, seed=0), randn(4, 3, 5, 5, seed=1)
    ab = levels(kind, 4)
    x0 = P.x0_from_eps(x_t, eps, ab)
    torch.testing.assert_close(P.eps_from_x0(x_t, x0, ab), eps, rtol=0, atol=1e-12)
    v = P.v_from_eps_x0(eps, x0, ab)
    torch.testing.assert_close(P.eps_from_v(x_t, v, ab), eps, rtol=0, atol=1e-12)
    torch.testing.assert_close(P.x0_from_v(x_t, v, ab), x0, rtol=0, atol=1e-12)
    score = P.score_from_eps(eps, ab)
    torch.testing.assert_close(P.eps_from_score(score, ab), eps, rtol=0, atol=1e-12)
    # and the other way round: from x̂₀ to ε to x̂₀
    torch.testing.assert_close(P.x0_from_eps(x_t, P.eps_from_x0(x_t, x0, ab), ab), x0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_flow_round_trips(kind):
    x_t, u = randn(4, 3, 5, 5, seed=2), randn(4, 3, 5, 5, seed=3)
    t = levels(kind, 4)
    x0, eps = P.flow_x0_from_velocity(x_t, u, t), P.flow_eps_from_velocity(x_t, u, t)
    tt = shaped(t, x_t)
    torch.testing.assert_close((1 - tt) * x0 + tt * eps, x_t, rtol=0, atol=1e-12)  # the same point
    torch.testing.assert_close(P.flow_velocity_from_eps_x0(eps, x0), u, rtol=0, atol=1e-12)


def test_dtype_and_device_follow_x():
    x, e = randn(3, 2).float(), randn(3, 2, seed=1).float()
    ab = torch.tensor([0.9999, 0.5, 0.01], dtype=F64)  # a schedule's float64 ᾱ
    for out in [
        P.x0_from_eps(x, e, ab),
        P.eps_from_x0(x, e, ab),
        P.score_from_eps(e, ab),
        P.vp_to_flow(x, ab)[0],
    ]:
        assert out.dtype == torch.float32
    t_flow = P.vp_to_flow(x, ab)[1]
    assert t_flow.dtype == F64 and t_flow.shape == (3,)  # t keeps ᾱ's form
    assert isinstance(P.vp_to_flow(x, 0.5)[1], float)
    assert P.mixture_flow_velocity(toy_mixture(), x, 0.5).dtype == torch.float32


# --- each conversion against its closed form ----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_vp_conversions_recover_known_x0_and_eps(kind):
    x0, eps = randn(4, 3, 5, 5, seed=4), randn(4, 3, 5, 5, seed=5)
    ab = levels(kind, 4)
    abt = torch.as_tensor(shaped(ab, x0), dtype=F64)
    a, s = abt.sqrt(), (1 - abt).sqrt()
    x_t = a * x0 + s * eps
    v = a * eps - s * x0
    torch.testing.assert_close(P.x0_from_eps(x_t, eps, ab), x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(P.eps_from_x0(x_t, x0, ab), eps, rtol=0, atol=1e-12)
    torch.testing.assert_close(P.v_from_eps_x0(eps, x0, ab), v, rtol=0, atol=1e-12)
    torch.testing.assert_close(P.eps_from_v(x_t, v, ab), eps, rtol=0, atol=1e-12)
    torch.testing.assert_close(P.x0_from_v(x_t, v, ab), x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(P.score_from_eps(eps, ab), -eps / s, rtol=0, atol=1e-12)


def test_v_is_the_angular_velocity():
    """With a = cos φ, σ = sin φ, v = dx_φ/dφ: checked by a central difference."""
    x0, eps = randn(5, 2, seed=6), randn(5, 2, seed=7)
    phi, h = 0.7, 1e-5
    x = lambda p: math.cos(p) * x0 + math.sin(p) * eps
    fd = (x(phi + h) - x(phi - h)) / (2 * h)
    torch.testing.assert_close(P.v_from_eps_x0(eps, x0, math.cos(phi) ** 2), fd, rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_flow_conversions_recover_known_x0_and_eps(kind):
    x0, eps = randn(4, 3, 5, 5, seed=8), randn(4, 3, 5, 5, seed=9)
    t = levels(kind, 4)
    tt = shaped(t, x0)
    x_t = (1 - tt) * x0 + tt * eps
    u = P.flow_velocity_from_eps_x0(eps, x0)
    torch.testing.assert_close(u, eps - x0, rtol=0, atol=0)
    torch.testing.assert_close(P.flow_x0_from_velocity(x_t, u, t), x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(P.flow_eps_from_velocity(x_t, u, t), eps, rtol=0, atol=1e-12)


def test_vp_oracle_eps_gives_the_mixture_score_and_x0_mean():
    m = toy_mixture()
    schedule = cosine_schedule(1000)
    oracle = GaussianMixtureOracle(m, schedule)
    steps = torch.tensor([0, 10, 250, 500, 750, 999] * 4)
    ab = schedule.alpha_bar[steps]
    x_t = schedule.q_sample(m.sample(len(steps), generator=gen(1)).double(), steps, generator=gen(2))
    eps = oracle(x_t, steps)
    score = P.score_from_eps(eps, ab)
    torch.testing.assert_close(score, P.mixture_vp_score(m, x_t, ab), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(score, oracle.score(x_t, steps), rtol=1e-10, atol=1e-10)
    per_row = torch.cat([m.noised(float(ab[i])).score(x_t[i : i + 1]) for i in range(len(steps))])
    torch.testing.assert_close(score, per_row, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(P.x0_from_eps(x_t, eps, ab), oracle.x0_mean(x_t, steps), rtol=1e-9, atol=1e-9)


def test_mixture_vp_score_at_the_ends():
    m = toy_mixture()
    x = randn(6, 2)
    torch.testing.assert_close(P.mixture_vp_score(m, x, 1.0), m.score(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(P.mixture_vp_score(m, x, 0.0), -x, rtol=0, atol=1e-12)


# --- the flow oracle ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_flow_velocity_of_one_gaussian_has_the_transport_map_closed_form(t):
    """For x₀ ~ N(μ, Σ), x_t ~ N(m_t, C_t) with m_t = (1−t) μ, C_t = (1−t)² Σ + t² I. All C_t commute, so
    the map x = m_t + C_t^{1/2} z moves points with velocity ṁ_t + ½ Ċ_t C_t⁻¹ (x − m_t): derived from the
    transport map, not from conditioning, and equal to u = −μ + (t I − (1−t) Σ) C_t⁻¹ (x − (1−t) μ)."""
    mu = torch.tensor([0.7, -1.2], dtype=F64)
    cov = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=F64)
    g = GaussianMixture(mu[None], cov[None], torch.ones(1, dtype=F64))
    x = 2 * randn(7, 2, seed=10)
    eye = torch.eye(2, dtype=F64)
    C = (1 - t) ** 2 * cov + t**2 * eye
    C_dot = 2 * t * eye - 2 * (1 - t) * cov
    expected = -mu + (x - (1 - t) * mu) @ torch.linalg.solve(C, 0.5 * C_dot).T  # (½ Ċ C⁻¹)ᵀ = C⁻¹ ½ Ċ
    torch.testing.assert_close(P.mixture_flow_velocity(g, x, t), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("t", [0.05, 0.3, 0.7, 0.95])
def test_flow_velocity_of_a_1d_mixture_matches_quadrature(t):
    """E[ε − x₀ | x_t = x] by quadrature over x₀:
    p(x₀ | x) ∝ p₀(x₀) N(x; (1−t) x₀, t²) and ε = (x − (1−t) x₀)/t."""
    m = mixture_1d([-1.5, 1.0], [0.3, 0.6], [0.35, 0.65])
    x = torch.linspace(-3, 3, 13, dtype=F64)[:, None]
    x0 = torch.linspace(-10, 10, 400_001, dtype=F64)
    log_w = m.log_prob(x0[:, None])[None, :] - 0.5 * ((x - (1 - t) * x0) / t) ** 2  # (13, grid)
    w = torch.softmax(log_w, dim=1)  # the grid is uniform: quadrature weights cancel
    u = (w * ((x - (1 - t) * x0) / t - x0)).sum(dim=1, keepdim=True)
    torch.testing.assert_close(P.mixture_flow_velocity(m, x, t), u, rtol=0, atol=1e-9)


def test_flow_velocity_is_the_regression_of_eps_minus_x0_monte_carlo():
    """u* = E[ε − x₀ | x_t] means the residual ε − x₀ − u*(x_t) is orthogonal to every g(x_t). With 400k
    draws each sample mean must sit within 4.5 standard errors of 0 — and a wrong field (the velocity at
    another t) must not."""
    m = mixture_1d([-1.5, 1.0], [0.3, 0.6], [0.35, 0.65])
    n, t = 400_000, 0.5
    x0 = m.sample(n, generator=gen(11)).double()
    eps = torch.randn(n, 1, generator=gen(12), dtype=F64)
    x_t = (1 - t) * x0 + t * eps
    tests = [torch.ones_like(x_t), x_t, torch.tanh(3 * x_t), torch.exp(-(x_t**2))]
    for field, ok in [
        (P.mixture_flow_velocity(m, x_t, t), True),
        (P.mixture_flow_velocity(m, x_t, 0.55), False),
    ]:
        residual = eps - x0 - field
        z = [float((residual * g).mean() / ((residual * g).std() / math.sqrt(n))) for g in tests]
        if ok:
            assert max(map(abs, z)) < 4.5, z
        else:
            assert max(map(abs, z)) > 10, z


@pytest.mark.parametrize("t", [0.15, 0.5, 0.85])
def test_flow_velocity_satisfies_the_continuity_equation(t):
    """∂p_t/∂t + ∇·(p_t u*) = 0 for the toy mixture in 2-D, all derivatives by central differences.

    With h = 1e-5 the residual measured 9e-9, 2e-9 and 4e-11 of max |∂p/∂t| at t = 0.15, 0.5, 0.85 (it falls
    as h², so it is truncation error); the tolerance is 1e-7 of it. The velocity at t + 0.01 misses by > 1e-3.
    """
    m = toy_mixture()
    x = torch.tensor([[-1.0, -0.5], [-0.8, -0.3], [1.0, -0.4], [0.1, 0.8], [1.1, 1.0], [0.0, 0.0]], dtype=F64)
    x = (1 - t) * x  # near the modes of p_t
    h = 1e-5
    p = lambda x, t: path_mixture(m, t).log_prob(x).exp()
    dp_dt = (p(x, t + h) - p(x, t - h)) / (2 * h)
    scale = float(dp_dt.abs().max())
    assert scale > 0.1  # the test points see the density move

    def residual(t_u):
        div = torch.zeros_like(dp_dt)
        for i in range(2):
            e = torch.zeros(2, dtype=F64)
            e[i] = h
            flux = lambda x: p(x, t) * P.mixture_flow_velocity(m, x, t_u)[:, i]  # noqa: B023
            div += (flux(x + e) - flux(x - e)) / (2 * h)
        return float((dp_dt + div).abs().max()) / scale

    assert residual(t) < 1e-7
    assert residual(t + 0.01) > 1e-3


def test_flow_velocity_at_the_ends():
    """t = 0: ε is independent of x₀ = x, so u* = −x. t = 1: x₁ = ε tells nothing about x₀, u* = x − E[x₀].
    Both are also the limits of the interior field."""
    m = toy_mixture()
    x = randn(8, 2, seed=13)
    torch.testing.assert_close(P.mixture_flow_velocity(m, x, 0.0), -x, rtol=0, atol=1e-12)
    torch.testing.assert_close(P.mixture_flow_velocity(m, x, 1.0), x - m.mean(), rtol=0, atol=1e-12)
    torch.testing.assert_close(P.mixture_flow_velocity(m, x, 1e-9), -x, rtol=0, atol=1e-6)
    torch.testing.assert_close(P.mixture_flow_velocity(m, x, 1 - 1e-9), x - m.mean(), rtol=0, atol=1e-6)


def test_flow_velocity_equals_the_score_form_inside():
    """u* = −(x + t ∇log p_t(x)) / (1−t) for 0 ≤ t < 1: the score form of the same expectations."""
    m = toy_mixture()
    x = randn(8, 2, seed=14)
    for t in [0.0, 0.2, 0.6, 0.95]:
        score = path_mixture(m, t).score(x)
        expected = -(x + t * score) / (1 - t)
        torch.testing.assert_close(P.mixture_flow_velocity(m, x, t), expected, rtol=1e-10, atol=1e-10)


def test_flow_velocity_takes_one_t_per_sample():
    m = toy_mixture()
    x = randn(6, 2, seed=15)
    t = torch.tensor([0.0, 0.3, 0.3, 0.9, 1.0, 0.3], dtype=F64)
    rows = torch.cat([P.mixture_flow_velocity(m, x[i : i + 1], float(t[i])) for i in range(6)])
    torch.testing.assert_close(P.mixture_flow_velocity(m, x, t), rows, rtol=0, atol=0)


# --- VP ↔ flow ----------------------------------------------------------------------------------------------


def test_flow_time_and_alpha_bar_are_inverse():
    ab = torch.linspace(0, 1, 101, dtype=F64)
    t = P.flow_time_from_alpha_bar(ab)
    assert t[0] == 1 and t[-1] == 0 and (t.diff() < 0).all()  # ᾱ = 0 is noise, t = 1
    torch.testing.assert_close(P.alpha_bar_from_flow_time(t), ab, rtol=0, atol=1e-14)
    assert P.flow_time_from_alpha_bar(0.5) == pytest.approx(0.5)
    assert P.alpha_bar_from_flow_time(0.25) == pytest.approx(0.9)  # (3/4)² / ((3/4)² + (1/4)²)


@pytest.mark.parametrize("kind", ["float", "(B,)"])
def test_vp_and_flow_states_are_the_same_point(kind):
    x0, eps = randn(5, 3, 4, 4, seed=16), randn(5, 3, 4, 4, seed=17)
    ab = levels(kind, 5, low=0.0, high=1.0)
    if kind == "(B,)":
        ab[0], ab[-1] = 0.0, 1.0  # both ends
    abt = torch.as_tensor(shaped(ab, x0), dtype=F64)
    x_vp = abt.sqrt() * x0 + (1 - abt).sqrt() * eps
    x_lin, t = P.vp_to_flow(x_vp, ab)
    tt = shaped(t, x0)
    torch.testing.assert_close(x_lin, (1 - tt) * x0 + tt * eps, rtol=0, atol=1e-12)
    back, ab_back = P.flow_to_vp(x_lin, t)
    torch.testing.assert_close(back, x_vp, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.as_tensor(ab_back), torch.as_tensor(ab), rtol=0, atol=1e-12)


def test_eps_prediction_and_its_velocity_share_x0_and_eps():
    """At corresponding points an ε-prediction (any, not just the true ε) and the velocity made from it
    give the same ε and x̂₀ back."""
    x_vp, eps_hat = randn(6, 2, 3, 3, seed=18), randn(6, 2, 3, 3, seed=19)
    ab = levels("(B,)", 6)
    u = P.flow_velocity_from_vp_eps(x_vp, eps_hat, ab)
    x_lin, t = P.vp_to_flow(x_vp, ab)
    torch.testing.assert_close(P.flow_eps_from_velocity(x_lin, u, t), eps_hat, rtol=0, atol=1e-12)
    x0_hat = P.x0_from_eps(x_vp, eps_hat, ab)
    torch.testing.assert_close(P.flow_x0_from_velocity(x_lin, u, t), x0_hat, rtol=0, atol=1e-12)


@pytest.mark.parametrize("schedule", [linear_schedule(1000), cosine_schedule(1000)], ids=["linear", "cosine"])
def test_vp_eps_oracle_is_the_flow_velocity_oracle(schedule):
    """The key identity: the exact VP ε*, turned into a velocity, is the exact linear-path velocity u* at the
    corresponding point (both are conditional expectations of the same x₀ and ε)."""
    m = toy_mixture()
    oracle = GaussianMixtureOracle(m, schedule)
    steps = torch.tensor([0, 1, 50, 300, 600, 900, 999] * 3)
    ab = schedule.alpha_bar[steps]
    x_vp = schedule.q_sample(m.sample(len(steps), generator=gen(20)).double(), steps, generator=gen(21))
    eps = oracle(x_vp, steps)
    x_lin, t = P.vp_to_flow(x_vp, ab)
    u_star = P.mixture_flow_velocity(m, x_lin, t)
    torch.testing.assert_close(P.flow_velocity_from_vp_eps(x_vp, eps, ab), u_star, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(P.flow_eps_from_velocity(x_lin, u_star, t), eps, rtol=1e-10, atol=1e-10)


def test_zero_terminal_snr_step_is_refused_but_the_flow_oracle_has_the_limit():
    schedule = linear_schedule(1000).rescale_zero_terminal_snr()
    m = toy_mixture()
    x = randn(4, 2, seed=22)
    eps = GaussianMixtureOracle(m, schedule)(x, 999)
    with pytest.raises(ValueError, match=r"^alpha_bar=0\.0 .*pure noise"):
        P.flow_velocity_from_vp_eps(x, eps, float(schedule.alpha_bar[999]))
    x_lin, t = P.vp_to_flow(x, float(schedule.alpha_bar[999]))
    assert t == 1.0
    torch.testing.assert_close(P.mixture_flow_velocity(m, x_lin, t), x - m.mean(), rtol=0, atol=1e-12)


# --- bad inputs ---------------------------------------------------------------------------------------------

X, E = randn(3, 2), randn(3, 2, seed=1)


@pytest.mark.parametrize(
    "call, name, allowed",
    [
        (lambda: P.x0_from_eps(X, E, 0.0), "alpha_bar", r"\(0, 1\]: at ᾱ = 0"),
        (lambda: P.x0_from_eps(X, E, 1.5), "alpha_bar", r"\(0, 1\]"),
        (lambda: P.x0_from_eps(X, E, -0.1), "alpha_bar", r"\(0, 1\]"),
        (lambda: P.x0_from_eps(X, E, float("nan")), "alpha_bar", r"\(0, 1\]"),
        (lambda: P.eps_from_x0(X, E, 1.0), "alpha_bar", r"\[0, 1\): at ᾱ = 1"),
        (lambda: P.score_from_eps(E, 1.0), "alpha_bar", r"\[0, 1\)"),
        (lambda: P.v_from_eps_x0(E, X, 1.01), "alpha_bar", r"\[0, 1\]"),
        (
            lambda: P.x0_from_eps(X, E, torch.tensor([0.5, 0.0, 0.2])),
            "alpha_bar",
            r"^alpha_bar \(min 0, max 0.5\).*every value",
        ),
        (lambda: P.x0_from_eps(X, E, torch.tensor([0.5, 0.2])), "alpha_bar", r"shape \(3,\)"),
        (lambda: P.x0_from_eps(X, E, torch.full((3, 3), 0.5)), "alpha_bar", r"broadcasts to \(3, 2\)"),
        (lambda: P.x0_from_eps(X, E, torch.tensor([1, 2, 3])), "alpha_bar", r"floating-point tensor"),
        (lambda: P.x0_from_eps(X, E, True), "alpha_bar", r"expected a number"),
        (lambda: P.x0_from_eps(X, E, "0.5"), "alpha_bar", r"expected a number"),
        (lambda: P.flow_velocity_from_vp_eps(X, E, 0.0), "alpha_bar", r"\(0, 1\]"),
        (lambda: P.mixture_vp_score(toy_mixture(), X, 1.2), "alpha_bar", r"\[0, 1\]"),
        (lambda: P.flow_time_from_alpha_bar(-0.5), "alpha_bar", r"\[0, 1\]"),
        (lambda: P.vp_to_flow(X, 2.0), "alpha_bar", r"\[0, 1\]"),
        (lambda: P.flow_x0_from_velocity(X, E, 1.2), "t", r"\[0, 1\]"),
        (lambda: P.flow_eps_from_velocity(X, E, -0.1), "t", r"\[0, 1\]"),
        (lambda: P.flow_to_vp(X, 2.0), "t", r"\[0, 1\]"),
        (lambda: P.alpha_bar_from_flow_time(float("inf")), "t", r"\[0, 1\]"),
        (lambda: P.mixture_flow_velocity(toy_mixture(), X, 1.5), "t", r"\[0, 1\]"),
        (lambda: P.mixture_flow_velocity(toy_mixture(), X, -0.1), "t", r"\[0, 1\]"),
        (
            lambda: P.mixture_flow_velocity(toy_mixture(), X, torch.tensor([0.5, 1.1, 0.2])),
            "t",
            r"^t \(min 0.2, max 1.1\).*every value",
        ),
        (lambda: P.mixture_flow_velocity(toy_mixture(), X, torch.tensor([0.5, 0.2])), "t", r"shape \(3,\)"),
        (lambda: P.x0_from_eps(X, randn(3, 3), 0.5), "eps", r"shape of x_t, \(3, 2\)"),
        (lambda: P.v_from_eps_x0(E, randn(2, 2), 0.5), "x0", r"shape of eps"),
        (lambda: P.flow_x0_from_velocity(X, randn(3, 2, 1), 0.5), "u", r"shape of x_t"),
        (lambda: P.eps_from_x0([[1.0]], E, 0.5), "x_t", r"torch.Tensor"),
        (lambda: P.eps_from_x0(X[0], E[0], 0.5), "x_t", r"batch first"),
        (lambda: P.mixture_flow_velocity(toy_mixture(), randn(3, 3), 0.5), "x", r"\(N, 2\)"),
        (lambda: P.mixture_flow_velocity("toy", X, 0.5), "mixture", r"GaussianMixture"),
    ],
)
def test_bad_inputs_name_the_parameter(call, name, allowed):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert message.startswith(name) and message[len(name)] in "= (", message
    assert "is not allowed" in message
    assert re.search(allowed, message), message
