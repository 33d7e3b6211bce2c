import math

import pytest
import torch

from diffusion_course.oracle import GaussianMixture, GaussianMixtureOracle, toy_mixture
from diffusion_course.sampling import predict_x0
from diffusion_course.schedules import NoiseSchedule, cosine_schedule, linear_schedule

pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian(mean, cov):
    return GaussianMixture(torch.tensor([mean]), torch.tensor([cov]), torch.tensor([1.0]))


def full_t(t, n):
    return torch.full((n,), t, dtype=torch.long)


# --- the mixture -------------------------------------------------------------------------------------


def test_toy_mixture_is_instructive():
    m = toy_mixture()
    assert (m.K, m.D) == (4, 2)
    assert sorted(m.weights.tolist()) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    eig = torch.linalg.eigvalsh(m.covs)
    assert (eig[:, 1] / eig[:, 0]).max() > 20  # strongly anisotropic components
    assert 0.5 < float(torch.trace(m.covariance())) < 3.0  # data scale ~1
    # well separated: every pair of means is > 5 component standard deviations apart
    sd = eig[:, 1].sqrt()
    for i in range(4):
        for j in range(i + 1, 4):
            assert float((m.means[i] - m.means[j]).norm()) > 2.0 * float(sd[i] + sd[j])


def test_sample_moments_and_component_frequencies():
    m = toy_mixture()
    g = torch.Generator().manual_seed(0)
    x, k = m.sample(40_000, generator=g, return_components=True)
    assert x.dtype == torch.float32 and x.shape == (40_000, 2) and k.shape == (40_000,)
    assert torch.allclose(x.double().mean(0), m.mean(), atol=0.02)
    assert torch.allclose(torch.cov(x.double().T), m.covariance(), atol=0.03)
    assert torch.allclose(torch.bincount(k, minlength=4).double() / 40_000, m.weights, atol=0.01)
    # each component's own moments
    for c in range(4):
        xc = x[k == c].double()
        assert torch.allclose(xc.mean(0), m.means[c], atol=0.02)
        assert torch.allclose(torch.cov(xc.T), m.covs[c], atol=0.01)


def test_sample_is_reproducible():
    m = toy_mixture()
    a = m.sample(100, generator=torch.Generator().manual_seed(3))
    b = m.sample(100, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_mean_and_covariance_closed_forms():
    m = GaussianMixture(
        torch.tensor([[0.0, 0.0], [2.0, 0.0]]),
        torch.stack([torch.eye(2), 4 * torch.eye(2)]),
        torch.tensor([0.5, 0.5]),
    )
    assert torch.allclose(m.mean(), torch.tensor([1.0, 0.0], dtype=torch.float64))
    # law of total variance: E[Cov] + Cov[E] = diag(2.5, 2.5) + diag(1, 0)
    assert torch.allclose(m.covariance(), torch.tensor([[3.5, 0.0], [0.0, 2.5]], dtype=torch.float64))


def test_noised_mixture_moments():
    m = toy_mixture()
    for ab in [0.0, 0.3, 0.9, 1.0]:
        n = m.noised(ab)
        assert torch.allclose(n.means, math.sqrt(ab) * m.means)
        assert torch.allclose(n.mean(), math.sqrt(ab) * m.mean())
        assert torch.allclose(
            n.covariance(), ab * m.covariance() + (1 - ab) * torch.eye(2, dtype=torch.float64)
        )
    # the noised law is the law of √ᾱ x + √(1−ᾱ) ε
    g = torch.Generator().manual_seed(1)
    x = m.sample(40_000, generator=g).double()
    xt = math.sqrt(0.4) * x + math.sqrt(0.6) * torch.randn(x.shape, generator=g, dtype=torch.float64)
    assert torch.allclose(torch.cov(xt.T), m.noised(0.4).covariance(), atol=0.02)


def test_log_prob_single_gaussian_and_normalisation():
    cov = [[0.5, 0.2], [0.2, 0.3]]
    m = gaussian([0.3, -0.2], cov)
    x = torch.randn(50, 2, dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(
        torch.tensor([0.3, -0.2]).double(), torch.tensor(cov).double()
    )
    assert torch.allclose(m.log_prob(x), ref.log_prob(x))
    # the toy mixture's density integrates to 1 (grid quadrature)
    toy = toy_mixture()
    h = 0.01
    grid = torch.arange(-3.0, 3.0, h, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    total = toy.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp().sum() * h * h
    assert float(total) == pytest.approx(1.0, abs=1e-3)


def test_log_prob_of_mixture_is_weighted_sum_of_components():
    toy = toy_mixture()
    x = torch.randn(20, 2, dtype=torch.float64)
    dens = sum(
        float(w) * torch.distributions.MultivariateNormal(mu, cov).log_prob(x).exp()
        for w, mu, cov in zip(toy.weights, toy.means, toy.covs)
    )
    assert torch.allclose(toy.log_prob(x), dens.log())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"means": [0.0, 1.0]}, r"means=.*\(K, D\)"),
        ({"covs": [[[1.0, 0.0], [0.0, 1.0]]] * 2}, r"covs=.*\(1, 2, 2\)"),
        ({"covs": [[[1.0, 0.5], [0.0, 1.0]]]}, "symmetric"),
        ({"covs": [[[1.0, 2.0], [2.0, 1.0]]]}, "positive definite"),
        ({"weights": [0.5]}, "sum to 1"),
        ({"weights": [1.0, 0.0]}, r"weights=.*\(1,\)"),
        ({"weights": [-1.0]}, "> 0"),
        ({"means": [[float("nan"), 0.0]]}, "finite"),
    ],
)
def test_mixture_bad_input(kwargs, match):
    args = {"means": [[0.0, 0.0]], "covs": [[[1.0, 0.0], [0.0, 1.0]]], "weights": [1.0]} | kwargs
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**{k: torch.tensor(v) for k, v in args.items()})


# --- the oracle ---------------------------------------------------------------------------------------


def test_single_gaussian_oracle_is_the_closed_form():
    mu = torch.tensor([0.5, -1.0], dtype=torch.float64)
    sigma = torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=torch.float64)
    schedule = linear_schedule(50)
    oracle = GaussianMixtureOracle(gaussian(mu.tolist(), sigma.tolist()), schedule)
    x = torch.randn(16, 2, dtype=torch.float64)
    for t in [0, 10, 49]:
        ab = float(schedule.alpha_bar[t])
        C = ab * sigma + (1 - ab) * torch.eye(2, dtype=torch.float64)
        expected = math.sqrt(1 - ab) * torch.linalg.solve(C, (x - math.sqrt(ab) * mu).T).T
        assert torch.allclose(oracle(x, full_t(t, 16)), expected, atol=1e-12)


def test_score_is_the_gradient_of_the_noised_log_density():
    toy, schedule = toy_mixture(), cosine_schedule(100)
    oracle = GaussianMixtureOracle(toy, schedule)
    x = (1.5 * torch.randn(64, 2, dtype=torch.float64)).requires_grad_()
    for t in [0, 30, 80, 99]:
        (grad,) = torch.autograd.grad(toy.noised(float(schedule.alpha_bar[t])).log_prob(x).sum(), x)
        assert torch.allclose(oracle.score(x.detach(), full_t(t, 64)), grad, atol=1e-9, rtol=1e-7)
        ab = float(schedule.alpha_bar[t])
        assert torch.allclose(
            oracle(x.detach(), full_t(t, 64)), -math.sqrt(1 - ab) * grad, atol=1e-9, rtol=1e-7
        )


def test_oracle_is_the_conditional_mean_of_the_noise():
    # E[(ε − ε*(x_t)) g(x_t)] = 0 for g = 1 and g = x_t, and ε* beats a rescaled ε* on the training loss
    toy, schedule = toy_mixture(), cosine_schedule(100)
    oracle = GaussianMixtureOracle(toy, schedule)
    g = torch.Generator().manual_seed(2)
    n = 40_000
    for t in [5, 50, 90]:
        x0 = toy.sample(n, generator=g).double()
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        xt = schedule.q_sample(x0, t, noise=eps)
        resid = eps - oracle(xt, full_t(t, n))
        assert resid.mean(0).abs().max() < 4 / math.sqrt(n)
        assert (resid.T @ xt / n).abs().max() < 6 / math.sqrt(n)
        loss = resid.pow(2).mean()
        for scale in [0.9, 1.1]:
            assert loss < (eps - scale * oracle(xt, full_t(t, n))).pow(2).mean()


def test_limits_of_small_and_large_noise():
    toy = toy_mixture()
    x = toy.sample(32, generator=torch.Generator().manual_seed(0)).double()
    # ᾱ → 1: ε*/√(1−ᾱ) → −∇log p_data
    tiny = NoiseSchedule(torch.tensor([1e-10, 0.5], dtype=torch.float64))
    oracle = GaussianMixtureOracle(toy, tiny)
    scaled = oracle(x, full_t(0, 32)) / math.sqrt(1 - float(tiny.alpha_bar[0]))
    assert torch.allclose(scaled, -toy.score(x), rtol=1e-5, atol=1e-5)
    # ᾱ = 0 (zero terminal SNR): x_t is pure noise, so ε* = x_t and E[x_0 | x_t] = E[x_0]
    zsnr = cosine_schedule(20).rescale_zero_terminal_snr()
    oracle = GaussianMixtureOracle(toy, zsnr)
    assert torch.allclose(oracle(x, full_t(19, 32)), x, atol=1e-12)
    assert torch.allclose(oracle.x0_mean(x, full_t(19, 32)), toy.mean().expand(32, 2), atol=1e-12)


def test_x0_mean_is_tweedie():
    toy, schedule = toy_mixture(), cosine_schedule(100)
    oracle = GaussianMixtureOracle(toy, schedule)
    x = torch.randn(32, 2, dtype=torch.float64)
    for t in [0, 40, 95]:
        ab = float(schedule.alpha_bar[t])
        assert torch.allclose(oracle.x0_mean(x, full_t(t, 32)), predict_x0(x, oracle(x, full_t(t, 32)), ab))


def test_mixed_timesteps_in_one_batch():
    toy, schedule = toy_mixture(), cosine_schedule(50)
    oracle = GaussianMixtureOracle(toy, schedule)
    x = torch.randn(6, 2)
    t = torch.tensor([0, 49, 10, 0, 10, 30])
    together = oracle(x, t)
    one_by_one = torch.cat([oracle(x[i : i + 1], t[i : i + 1]) for i in range(6)])
    assert torch.allclose(together, one_by_one)


def test_dtype_follows_input():
    oracle = GaussianMixtureOracle(toy_mixture(), cosine_schedule(10))
    assert oracle(torch.randn(3, 2), full_t(4, 3)).dtype == torch.float32
    assert oracle(torch.randn(3, 2, dtype=torch.float64), full_t(4, 3)).dtype == torch.float64
    assert oracle(torch.randn(3, 2), 4).shape == (3, 2)


def test_conditional_oracle_picks_a_component():
    toy, schedule = toy_mixture(), cosine_schedule(50)
    cond = GaussianMixtureOracle(toy, schedule, conditional=True)
    assert cond.num_classes == 4
    x = torch.randn(8, 2, dtype=torch.float64)
    t = full_t(20, 8)
    for k in range(4):
        single = GaussianMixtureOracle(
            GaussianMixture(toy.means[k : k + 1], toy.covs[k : k + 1], [1.0]), schedule
        )
        labels = torch.full((8,), k)
        assert torch.allclose(cond(x, t, labels=labels), single(x, t), atol=1e-12)
    null = torch.full((8,), 4)
    assert torch.allclose(cond(x, t, labels=null), GaussianMixtureOracle(toy, schedule)(x, t))
    mixed = torch.tensor([0, 4, 1, 4, 2, 3, 0, 4])
    out = cond(x, t, labels=mixed)
    for i in range(8):
        assert torch.allclose(out[i], cond(x[i : i + 1], t[:1], labels=mixed[i : i + 1])[0])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda o: o(torch.randn(4, 3), full_t(0, 4)), r"x_t=.*\(B, 2\)"),
        (lambda o: o(torch.zeros(4, 2, dtype=torch.long), full_t(0, 4)), "floating-point"),
        (lambda o: o(torch.randn(4, 2), full_t(10, 4)), r"0\.\.9"),
        (lambda o: o(torch.randn(4, 2), full_t(0, 4).float()), "integer"),
        (
            lambda o: o(torch.randn(4, 2), full_t(0, 4), labels=torch.zeros(4, dtype=torch.long)),
            "unconditional",
        ),
    ],
)
def test_oracle_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(GaussianMixtureOracle(toy_mixture(), cosine_schedule(10)))


def test_conditional_oracle_bad_labels():
    cond = GaussianMixtureOracle(toy_mixture(), cosine_schedule(10), conditional=True)
    x, t = torch.randn(2, 2), full_t(3, 2)
    with pytest.raises(ValueError, match=r"0\.\.3, or 4"):
        cond(x, t, labels=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="integer"):
        cond(x, t, labels=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(2,\)"):
        cond(x, t, labels=torch.tensor([0]))
