# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Fast solvers: DDIM as an ODE, Heun, DPM-Solver++ and UniPC
#
# DDPM needs its 1000 steps, and DDIM gets good digits in 50. Both call the network once per step, and the
# network is where all the time goes. This notebook asks how few calls we can get away with. The answer comes
# from a change of viewpoint: deterministic DDIM (η = 0) is a numerical method for an ordinary differential
# equation, the **probability-flow ODE**, and it is the crudest one there is: Euler's method. Better ODE
# methods reach the same end point with fewer evaluations.
#
# **In this notebook**: the ODE in the noise level σ and the proof that DDIM η = 0 is its Euler step; Heun's
# second-order method; DPM-Solver++(2M) (Lu et al. 2022), the exponential integrator that works in
# λ = log(√ᾱ/√(1−ᾱ)) and predicts x₀; quality against the number of network evaluations (NFE) on the exact
# 2-D oracle and on the course's MNIST model; the sampler table filled with our own measurements; three
# exercises; then UniPC's free corrector (a fourth exercise) and a timestep grid fitted to the problem.

# %%
import math
import time

import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm

from diffusion_course import get_profile, make_schedule, viz
from diffusion_course.checkpoints import load_checkpoint
from diffusion_course.data import load_mnist
from diffusion_course.exercises.solvers import (
    check_dpmpp_2m_combination,
    check_dpmpp_first_order_step,
    check_euler_step,
    check_unipc_trapezoid,
)
from diffusion_course.metrics import classifier_features, frechet_distance, sliced_w2
from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture
from diffusion_course.sampling import (
    ddim_sample,
    ddim_step,
    ddpm_sample,
    dpmpp_2m_coefficients,
    dpmpp_2m_sample,
    dpmpp_first_order_step,
    euler_sample,
    fit_timesteps,
    half_log_snr,
    heun_sample,
    solver_nfe,
    timesteps,
    unipc_sample,
)

P = get_profile()
print(P)

# %% [markdown]
# ## 1. The ODE behind DDIM
#
# The forward process gives $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$. Divide by
# $\sqrt{\bar\alpha_t}$ and the signal stops shrinking:
#
# $$\tilde x = \frac{x_t}{\sqrt{\bar\alpha_t}} = x_0 + \sigma_t\,\varepsilon, \qquad
#   \sigma_t = \sqrt{\frac{1-\bar\alpha_t}{\bar\alpha_t}} .$$
#
# In this **σ frame** (the "variance-exploding" view of k-diffusion and Karras et al. 2022) diffusing means
# adding more and more noise to a fixed image, and sampling means removing it as σ goes from σ_max down to 0.
# Song et al. (2021) showed that there is a deterministic path with the same marginals as the noisy chain,
# the probability-flow ODE. In the σ frame it is strikingly simple: the velocity is the predicted noise,
#
# $$\frac{d\tilde x}{d\sigma} = \varepsilon_\theta(x, t(\sigma)), \qquad x = \sqrt{\bar\alpha}\,\tilde x,$$
#
# because $\varepsilon_\theta = -\sigma\,\nabla_{\tilde x}\log p_\sigma(\tilde x)$ and the VE probability-flow
# ODE is $d\tilde x/d\sigma = -\sigma\,\nabla\log p_\sigma$. We integrate it from σ at the first listed t down
# to **σ = 0** (ᾱ = 1, the clean image after the last step). The package has σ (`vp_sigma`, also
# `schedule.sigmas`) and half the log-SNR, $\lambda = \log(\sqrt{\bar\alpha}/\sqrt{1-\bar\alpha}) = -\log\sigma$
# (`half_log_snr`), which we need in section 3.

# %%
schedule = make_schedule("linear", T=1000)
print(f"{'t':>4} {'alpha_bar':>10} {'sigma':>10} {'lambda':>8}")
for t in [999, 900, 500, 100, 10, 0]:
    ab = schedule.alpha_bar[t].item()
    print(f"{t:>4} {ab:>10.3e} {schedule.sigmas[t].item():>10.4f} {half_log_snr(ab):>8.3f}")
print(f"clean: sigma = 0, lambda = {half_log_snr(1.0)}")

# %%
assert abs(schedule.sigmas[999].item() - 157.4) < 0.1 and abs(half_log_snr(1.0 - 1e-12) - 13.8) < 0.1
assert all(
    abs(half_log_snr(schedule.alpha_bar[t].item()) + math.log(schedule.sigmas[t].item())) < 1e-9
    for t in (0, 999)
)

# %% [markdown]
# ### DDIM η = 0 is Euler's method
#
# Euler's method takes one step with the slope at the start: $\tilde x_{prev} = \tilde x_t +
# (\sigma_{prev} - \sigma_t)\,\varepsilon$. DDIM with η = 0 predicts $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,
# \varepsilon)/\sqrt{\bar\alpha_t} = \tilde x_t - \sigma_t\varepsilon$ and re-noises it to the next level:
#
# $$x_{prev} = \sqrt{\bar\alpha_{prev}}\,\hat x_0 + \sqrt{1-\bar\alpha_{prev}}\,\varepsilon
#   = \sqrt{\bar\alpha_{prev}}\big(\tilde x_t - \sigma_t\varepsilon + \sigma_{prev}\varepsilon\big)
#   = \sqrt{\bar\alpha_{prev}}\big(\tilde x_t + (\sigma_{prev}-\sigma_t)\,\varepsilon\big).$$
#
# The same formula. So on the same grid of timesteps, `euler_sample` and `ddim_sample(eta=0)` must agree to
# rounding, whatever the ε-model. We check it on the exact ε of the course's 2-D Gaussian mixture (the
# "oracle": no model error, only solver error), starting from x at t = 999.

# %%
mixture = toy_mixture()
oracle = GaussianMixtureOracle(mixture, schedule)
n_points = P.pick(quick=4000, full=50_000)
x_T_2d = mixture.noised(schedule.alpha_bar[999].item()).sample(
    n_points, generator=torch.Generator().manual_seed(0)
)
grid10 = timesteps(schedule.T, 10)  # "trailing": 999, 899, …, 99
euler_10 = euler_sample(oracle, x_T_2d, schedule, grid10)
ddim_10 = ddim_sample(oracle, x_T_2d, schedule, grid10, eta=0.0)
print(f"grid: {grid10.tolist()}")
print(f"max |Euler − DDIM(η=0)| over {n_points} points: {(euler_10 - ddim_10).abs().max().item():.1e}")

# %%
assert torch.allclose(euler_10, ddim_10, atol=1e-5)

# %% [markdown]
# Euler follows the slope at the start of each step, so with few steps it cuts corners. Here is the path of
# 12 points: the ODE solved accurately (DPM-Solver++, 200 steps, grey) and Euler with 5 steps (orange, one
# dot per step), drawn in x (the samplers' variable), over samples of the data (blue).

# %%
few = x_T_2d[:12]
_, fine = dpmpp_2m_sample(oracle, few, schedule, timesteps(1000, 200, "log"), return_trajectory=True)
_, coarse = euler_sample(oracle, few, schedule, timesteps(1000, 5), return_trajectory=True)
fine_xs, coarse_xs = torch.stack(fine.xs), torch.stack(coarse.xs)  # (steps + 1, 12, 2)

fig, ax = plt.subplots(figsize=(5.5, 5))
data_2d = mixture.sample(3000, generator=torch.Generator().manual_seed(1))
ax.scatter(*data_2d.T, s=2, color="tab:blue", alpha=0.15, label="data")
for i in range(12):
    ax.plot(*fine_xs[:, i].T, color="0.4", lw=1, label="ODE (accurate)" if i == 0 else None)
    ax.plot(
        *coarse_xs[:, i].T, "o-", color="tab:orange", ms=3, lw=1, label="Euler, 5 steps" if i == 0 else None
    )
ax.set_xlim(-3, 3)
ax.set_ylim(-3, 3)
ax.set_aspect("equal")
ax.legend(loc="lower right", fontsize=8)
ax.set_title("probability-flow paths in x")
plt.show()

# %% [markdown]
# ### Exercise 1: the Euler step in σ
#
# Write `euler_step_mine(x_t, eps, alpha_bar_t, alpha_bar_prev)` (the ᾱ's are Python floats): go to the σ
# frame, take the Euler step, come back to x. It must also work on the **last step**, where ᾱ_prev = 1 and
# σ_prev = 0.


# %%
def euler_step_mine(x_t, eps, alpha_bar_t, alpha_bar_prev):
    """x̃ = x/√ᾱ_t, x̃_prev = x̃ + (σ_prev − σ_t) ε, x_prev = √ᾱ_prev x̃_prev, with σ = √((1−ᾱ)/ᾱ)."""
    # BEGIN SOLUTION
    sigma_t = math.sqrt((1 - alpha_bar_t) / alpha_bar_t)
    sigma_prev = math.sqrt((1 - alpha_bar_prev) / alpha_bar_prev)
    x_tilde = x_t / math.sqrt(alpha_bar_t)
    return math.sqrt(alpha_bar_prev) * (x_tilde + (sigma_prev - sigma_t) * eps)
    # END SOLUTION


# %%
result = check_euler_step(euler_step_mine)
assert result.passed, result  # solution-only
result

# %% [markdown]
# ## 2. Heun: second order, two evaluations per step
#
# Euler's error per step is proportional to the step size squared, so its total error falls only like 1/N
# (a **first-order** method: twice the steps, half the error). Heun's method (the explicit trapezoid rule)
# takes the Euler step as a *prediction*, evaluates the slope again at the predicted point, and then takes
# the step with the average slope:
#
# $$\tilde x' = \tilde x_t + (\sigma_{prev}-\sigma_t)\,\varepsilon_t,\qquad
#   \varepsilon' = \varepsilon_\theta(\sqrt{\bar\alpha_{prev}}\,\tilde x',\ t_{prev}),\qquad
#   \tilde x_{prev} = \tilde x_t + (\sigma_{prev}-\sigma_t)\,\tfrac12(\varepsilon_t + \varepsilon').$$
#
# Its error falls like 1/N² (**second order**), but each step costs two network calls. On the last step, to
# σ = 0, there is no timestep to evaluate at (and the slope changes fastest there), so Heun takes a plain
# Euler step, as Karras et al. (2022) do: N steps cost 2N − 1 evaluations (`solver_nfe("heun", N)`).
# One warning: the trapezoid assumes ε changes linearly in σ over a step. When one step spans a huge ratio
# of σ's (157 → 26 in the first step of a 5-step grid), that assumption fails badly; section 4 shows it.
#
# ## 3. DPM-Solver++(2M): solve the linear part exactly
#
# Write the ODE with the model's clean-image prediction $\hat x_0 = \tilde x - \sigma\varepsilon$ instead of ε:
# $d\tilde x/d\sigma = (\tilde x - \hat x_0)/\sigma$. In $\lambda = -\log\sigma$ (half the log-SNR; $d\sigma =
# -\sigma\,d\lambda$) this becomes
#
# $$\frac{d\tilde x}{d\lambda} = -\tilde x + \hat x_0(\lambda),$$
#
# a *linear* equation with a forcing term, and linear equations can be solved exactly (variation of
# constants). From $\lambda_t$ to $\lambda_{prev} = \lambda_t + h$:
#
# $$\tilde x_{prev} = e^{-h}\,\tilde x_t + \int_{\lambda_t}^{\lambda_{prev}} e^{-(\lambda_{prev}-\lambda)}\,
#   \hat x_0(\lambda)\,d\lambda .$$
#
# Only the integral needs approximating; that is the idea of **exponential integrators** (DPM-Solver, Lu et al.
# 2022). Holding $\hat x_0$ constant over the step gives the first-order step; back in x (with $\alpha =
# \sqrt{\bar\alpha}$, $s = \sqrt{1-\bar\alpha}$, so $\sigma = s/\alpha$ and $e^{-h} = s_{prev}\alpha_t /
# (\alpha_{prev} s_t)$):
#
# $$x_{prev} = \frac{s_{prev}}{s_t}\,x_t - \alpha_{prev}\,(e^{-h}-1)\,\hat x_0 .$$
#
# Multiply it out and it is, once again, the DDIM step: first-order DPM-Solver++ = DDIM = Euler in σ. The
# gain comes from the next order. DPM-Solver++(2M) ("2nd order, multistep") reuses the previous step's
# prediction $\hat x_0^{before}$ at $\lambda_{before}$, for free, to extrapolate $\hat x_0$ linearly in λ,
# evaluated half a step ahead:
#
# $$D = \Big(1 + \frac{1}{2r}\Big)\hat x_0 - \frac{1}{2r}\,\hat x_0^{before},\qquad
#   r = \frac{h_{before}}{h} = \frac{\lambda_t - \lambda_{before}}{\lambda_{prev} - \lambda_t},\qquad
#   x_{prev} = \frac{s_{prev}}{s_t}\,x_t - \alpha_{prev}\,(e^{-h}-1)\,D .$$
#
# One evaluation per step, second order. Two steps are first order: the **first** (there is no previous
# prediction yet) and the **last**: it goes to σ = 0, i.e. $\lambda_{prev} = +\infty$, where $h = \infty$ and
# $r = 0$ would blow up the correction ("lower order final"). With $e^{-h} = 0$ the last step is simply
# $x_0 = \hat x_0$, computed without ever forming λ = ∞. Let's check the identity and the coefficients.

# %%
g = torch.Generator().manual_seed(2)
x_t, eps = (
    torch.randn(4, 2, generator=g, dtype=torch.float64),
    torch.randn(4, 2, generator=g, dtype=torch.float64),
)
print(f"{'alpha_bar_t':>12} {'alpha_bar_prev':>15} {'max |DPM-Solver++(1) - DDIM|':>30}")
for ab_t, ab_prev in [(4e-5, 0.02), (0.3, 0.8), (0.97, 1.0)]:
    x_ddim, x0_pred = ddim_step(x_t, eps, ab_t, ab_prev)
    gap = (dpmpp_first_order_step(x_t, x0_pred, ab_t, ab_prev) - x_ddim).abs().max().item()
    print(f"{ab_t:>12} {ab_prev:>15} {gap:>30.1e}")
ab = schedule.alpha_bar
r, c = dpmpp_2m_coefficients(ab[899].item(), ab[799].item(), ab[699].item())
print(f"grid 899 → 799 → 699: r = {r:.3f}, weights 1 + 1/(2r) = {1 + c:.3f} and -1/(2r) = {-c:.3f}")

# %%
assert gap < 1e-12
assert (
    abs(
        r
        - (half_log_snr(ab[799].item()) - half_log_snr(ab[899].item()))
        / (half_log_snr(ab[699].item()) - half_log_snr(ab[799].item()))
    )
    < 1e-12
)
grid2 = timesteps(1000, 2)  # both steps first order: DPM-Solver++ with 2 steps is DDIM
assert torch.allclose(
    dpmpp_2m_sample(oracle, x_T_2d, schedule, grid2), ddim_sample(oracle, x_T_2d, schedule, grid2), atol=1e-5
)

# %% [markdown]
# ### Exercise 2: the first-order DPM-Solver++ step
#
# Write `dpmpp_first_order_mine(x_t, x0_pred, alpha_bar_t, alpha_bar_prev)` =
# $\frac{s_{prev}}{s_t}x_t - \alpha_{prev}(e^{-h}-1)\hat x_0$. Measure h in λ. It must work on the last step
# (ᾱ_prev = 1, λ_prev = +∞): compute $e^{-h}$ from the ratio $s_{prev}\alpha_t/(\alpha_{prev}s_t)$.


# %%
def dpmpp_first_order_mine(x_t, x0_pred, alpha_bar_t, alpha_bar_prev):
    """x_prev = (s_prev/s_t) x_t + α_prev (1 − e^{−h}) x̂₀, α = √ᾱ, s = √(1−ᾱ), h = λ_prev − λ_t."""
    # BEGIN SOLUTION
    a_t, a_prev = math.sqrt(alpha_bar_t), math.sqrt(alpha_bar_prev)
    s_t, s_prev = math.sqrt(1 - alpha_bar_t), math.sqrt(1 - alpha_bar_prev)
    exp_minus_h = (s_prev * a_t) / (a_prev * s_t)
    return (s_prev / s_t) * x_t + a_prev * (1 - exp_minus_h) * x0_pred
    # END SOLUTION


# %%
result = check_dpmpp_first_order_step(dpmpp_first_order_mine)
assert result.passed, result  # solution-only
result

# %% [markdown]
# ### Exercise 3: the 2M combination
#
# Write `combination_mine(x0_pred, x0_pred_before, alpha_bar_before, alpha_bar_t, alpha_bar_prev)` that
# returns $D$: compute the three λ's with `half_log_snr`, r, and the weighted combination of the two
# predictions.


# %%
def combination_mine(x0_pred, x0_pred_before, alpha_bar_before, alpha_bar_t, alpha_bar_prev):
    """D = (1 + 1/(2r)) x̂₀ − 1/(2r) x̂₀_before with r = (λ_t − λ_before)/(λ_prev − λ_t)."""
    # BEGIN SOLUTION
    lam_before, lam_t, lam_prev = (half_log_snr(a) for a in (alpha_bar_before, alpha_bar_t, alpha_bar_prev))
    r = (lam_t - lam_before) / (lam_prev - lam_t)
    return (1 + 1 / (2 * r)) * x0_pred - 1 / (2 * r) * x0_pred_before
    # END SOLUTION


# %%
result = check_dpmpp_2m_combination(combination_mine)
assert result.passed, result  # solution-only
result

# %% [markdown]
# ## 4. Quality against NFE on the oracle
#
# Now the race. Each sampler gets a budget of network evaluations, NFE ∈ {5, 10, 15, 20, 50}: DDIM and
# DPM-Solver++ take NFE steps, Heun takes (NFE + 1)/2 steps (2N − 1 evaluations); Euler is DDIM (section 1),
# so it is not run again. They use the course's "trailing" grid (999, 899, …, 99 for 10 steps), and
# DPM-Solver++ runs once more on the "log" grid, which ends at t = 0 (999, 463, 214, 99, …, 1, 0). All start
# from the same x at t = 999. Two measures:
#
# * the **mean distance** ‖x − x_ref‖ to an accurate solution of the ODE from the same x_T (DPM-Solver++ with
#   many steps on the "log" grid): the solver's own error, free of sampling noise;
# * **sliced W2** to a fresh sample of the mixture (`metrics.sliced_w2`): how good the *distribution* is.
#   Two independent samples of the mixture are not at distance 0 either; we print that **noise floor**
#   (three seeds).

# %%
nfe_list = [5, 10, 15, 20, 50]
samplers = {"DDIM": ddim_sample, "Heun": heun_sample, "DPM-Solver++(2M)": dpmpp_2m_sample}
keys = {"DDIM": "ddim", "Heun": "heun", "DPM-Solver++(2M)": "dpmpp2m"}
race = [(name, "trailing") for name in samplers] + [("DPM-Solver++(2M)", "log")]


def steps_for(name, nfe):
    """The number of steps a sampler can take within ``nfe`` evaluations."""
    return (nfe + 1) // 2 if name == "Heun" else nfe


def sw2(samples):
    return sliced_w2(samples, data_ref, n_projections=64)


data_ref = mixture.sample(n_points, generator=torch.Generator().manual_seed(3))
floors = [sw2(mixture.sample(n_points, generator=torch.Generator().manual_seed(seed))) for seed in (4, 5, 6)]
ref_steps = P.pick(quick=200, full=1000)
reference = dpmpp_2m_sample(oracle, x_T_2d, schedule, timesteps(1000, ref_steps, "log"))

oracle_nfe, oracle_sw2, oracle_err = {}, {}, {}
for name, strategy in race:
    curve = (name, strategy)
    oracle_nfe[curve], oracle_sw2[curve], oracle_err[curve] = [], [], []
    for nfe in nfe_list:
        steps = steps_for(name, nfe)
        out = samplers[name](oracle, x_T_2d, schedule, timesteps(1000, steps, strategy))
        oracle_nfe[curve].append(solver_nfe(keys[name], steps))
        oracle_sw2[curve].append(sw2(out))
        oracle_err[curve].append((out - reference).norm(dim=1).mean().item())

# %%
# NBVAL_CHECK_OUTPUT
print(f"{n_points} points; reference: DPM-Solver++, {ref_steps} steps, log grid")
print(f"sliced W2 noise floor (data vs data): {min(floors):.3f} to {max(floors):.3f}")
print(f"{'sampler':<18}{'grid':>9}{'NFE':>5}{'|x - x_ref|':>13}{'sliced W2':>11}")
for name, strategy in race:
    curve = (name, strategy)
    for used, e, w in zip(oracle_nfe[curve], oracle_err[curve], oracle_sw2[curve]):
        print(f"{name:<18}{strategy:>9}{used:>5}{e:>13.4f}{w:>11.3f}")

# %%
ddim_err = oracle_err[("DDIM", "trailing")]
dpm_err, dpm_log_err = oracle_err[("DPM-Solver++(2M)", "trailing")], oracle_err[("DPM-Solver++(2M)", "log")]
assert all(d < e for d, e in zip(dpm_err, ddim_err))  # DPM-Solver++ beats DDIM at every budget
assert 3 < ddim_err[1] / ddim_err[4] < 7  # first order: 5× the NFE, about 5× less error
assert dpm_log_err[1] / dpm_log_err[4] > 12  # second order on a grid that ends at t = 0
assert all(v < 0.5 for curve in oracle_sw2 if curve[0] != "Heun" for v in oracle_sw2[curve])
assert oracle_sw2[("DPM-Solver++(2M)", "log")][4] < 1.5 * max(floors)

# %% [markdown]
# What the numbers say (the orders are pinned by the tests of `sampling/solvers.py`; larger runs are in
# `docs/benchmarks/solvers.md`):
#
# * DDIM (= Euler) is first order: 5 times the NFE, about 5 times less error.
# * DPM-Solver++(2M) beats DDIM at every budget, at the same cost per step.
# * On the trailing grid its error still falls only about as fast as DDIM's. The reason is the **last step**:
#   it is first order (x_0 = x̂₀) and starts from t ≈ 1000/N − 1, where σ² ≈ 1 − ᾱ ≈ 10⁻⁴·1000/N, so its error
#   shrinks only like 1/N, whatever the solver did before. On the "log" grid the last step starts at t = 0
#   (σ = 0.01) and the second order shows: from 10 to 50 NFE the error falls by more than 20.
# * Heun pays two evaluations per step, and its first step jumps from σ = 157 to σ ≈ 26 (t = 999 → 799 with 5
#   steps, 9 NFE): the trapezoid's linear-in-σ assumption fails there. It catches up only when the steps get
#   small. (On the "log" grid, whose first step goes from σ = 157 to σ ≈ 2, it is far worse; try it.)
# * A grid can also break the multistep extrapolation. The `linspace` grid for 10 steps ends 222 → 111 → 0:
#   the last step is 4.7 times longer in λ than the one before, so r ≈ 0.21 and the correction weight
#   1/(2r) ≈ 2.4 overshoots; there DPM-Solver++(2M) is *worse* than DDIM (benchmark: SW2 0.40 vs 0.12).
#   Multistep solvers want steps whose lengths in λ change slowly.
# * Sliced W2 tells the same story at 5–15 NFE; below about 0.07 its differences are within the noise of
#   the metric at this number of points (compare the noise floor).
#
# ## 5. On the shipped MNIST model
#
# The same race with the class-conditional U-Net (`mnist-cond`, linear schedule, T = 1000; no guidance,
# labels 0–9 in turn). Quality is the Fréchet distance (FD) between the features of the course's digit
# classifier on the samples and on the 500 held-out real digits. All samplers start from the same x_T.
# FD estimated from n samples is biased upwards, strongly so when n is small. To see how much, we also
# compute the FD of n **real training digits** (the same labels) against the held-out ones: a sampler cannot
# be expected to do better than real data at the same n. In the quick profile n is tiny and this floor is
# high; the benchmark (`docs/benchmarks/solvers.md`) repeats the comparison with hundreds of samples.

# %%
model, info = load_checkpoint("mnist-cond", device=P.device)
classifier, _ = load_checkpoint("mnist-classifier", device=P.device)
schedule = make_schedule(info["schedule"]["name"], info["schedule"]["T"])
real_images, _ = load_mnist("heldout")
real_features = classifier_features(classifier, real_images.to(P.device))
print(f"model: {info['num_parameters']:,} parameters; schedule {schedule}")

n_model = P.pick(quick=24, full=1000)
model_nfe_list = P.pick(quick=[5, 10, 20], full=nfe_list)
x_T = torch.randn(n_model, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(P.device)
labels = (torch.arange(n_model) % 10).to(P.device)
train_images, train_labels = load_mnist("train")
same_labels = torch.stack([(train_labels == k).nonzero()[i // 10, 0] for i, k in enumerate(labels.tolist())])
real_fd = frechet_distance(
    classifier_features(classifier, train_images[same_labels].to(P.device)), real_features
)
print(f"FD of {n_model} real training digits (labels 0-9 in turn) to the held-out ones: {real_fd:.1f}")


def run(sampler, steps, **kwargs):
    """Samples, wall-clock seconds per sample and FD of one sampler run from the shared x_T."""
    start = time.perf_counter()
    out = sampler(model, x_T, schedule, timesteps(schedule.T, steps), labels=labels, **kwargs)
    seconds = (time.perf_counter() - start) / n_model
    return out, seconds, frechet_distance(classifier_features(classifier, out), real_features)


model_nfe, model_fd, model_time, model_samples = {}, {}, {}, {}
for name, nfe in tqdm([(n, f) for n in samplers for f in model_nfe_list], desc="samplers × NFE"):
    steps = steps_for(name, nfe)
    out, seconds, fd = run(samplers[name], steps)
    model_nfe.setdefault(name, []).append(solver_nfe(keys[name], steps))
    model_fd.setdefault(name, []).append(fd)
    model_time[(name, nfe)] = seconds
    model_samples[(name, nfe)] = out.cpu()
euler_5 = euler_sample(model, x_T, schedule, timesteps(schedule.T, 5), labels=labels).cpu()
gap = (euler_5 - model_samples[("DDIM", 5)]).abs().max().item()
print(f"max |Euler − DDIM| with the model, 5 steps: {gap:.1e}")
print(f"FD of {n_model} samples to the held-out digits ({n_model} real digits: {real_fd:.1f})")
for name in samplers:
    print(
        f"{name:<18}" + "".join(f"  NFE {n:>2}: {fd:7.1f}" for n, fd in zip(model_nfe[name], model_fd[name]))
    )

# %%
assert torch.allclose(euler_5, model_samples[("DDIM", 5)], atol=1e-3)
assert all(math.isfinite(v) for values in model_fd.values() for v in values)

# %% [markdown]
# One picture for both races: the oracle's solver error (with 1/NFE and 1/NFE² guides), the oracle's sliced
# W2 (with the noise floor) and the model's FD. Lower is better; the x-axis is what you pay, network
# evaluations.

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
styles = {"DDIM": "o-", "Heun": "s-", "DPM-Solver++(2M)": "D-"}
for name, strategy in race:
    curve = (name, strategy)
    label = ("DDIM = Euler" if name == "DDIM" else name) + (
        "" if strategy == "trailing" else f", {strategy} grid"
    )
    style = styles[name] if strategy == "trailing" else "D--"
    axes[0].plot(oracle_nfe[curve], oracle_err[curve], style, label=label)
    axes[1].plot(oracle_nfe[curve], oracle_sw2[curve], style, label=label)
for name in samplers:
    axes[2].plot(
        model_nfe[name], model_fd[name], styles[name], label="DDIM = Euler" if name == "DDIM" else name
    )
axes[0].plot(nfe_list, [ddim_err[1] * 10 / n for n in nfe_list], color="0.6", ls=":", lw=1, label="∝ 1/NFE")
axes[0].plot(
    nfe_list, [dpm_log_err[1] * 100 / n**2 for n in nfe_list], color="0.3", ls=":", lw=1, label="∝ 1/NFE²"
)
axes[0].set_title(f"oracle: mean |x − x_ref| ({n_points} points)")
axes[1].axhspan(min(floors), max(floors), color="0.8", alpha=0.6, label="noise floor (data vs data)")
axes[1].set_title("oracle: sliced W2 to the mixture")
axes[2].axhline(real_fd, color="0.6", ls="--", label=f"{n_model} real digits")
axes[2].set_title(f"mnist-cond: FD to held-out digits ({n_model} samples)")
for ax in axes:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE (network evaluations per sample)")
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Digits from 5, 10 and 20 evaluations (rows), DDIM against DPM-Solver++ (left, right), same x_T and labels:

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
for ax, name in zip(axes, ["DDIM", "DPM-Solver++(2M)"]):
    rows = torch.cat([model_samples[(name, nfe)][:10] for nfe in model_nfe_list])
    viz.show_images(rows.clamp(-1, 1), nrow=10, ax=ax, title=f"{name}: NFE {model_nfe_list} (rows)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. The sampler table, measured
#
# The usual summary of sampling speed: DDPM with 1000 steps, DDIM with 50, DPM-Solver++ with 20, and
# *distilled* samplers (progressive distillation, consistency models) with 1–8 evaluations. We have **no
# distilled model** in this course (distillation means training a student network, which does not fit a
# laptop lesson), so that row is empty; what DPM-Solver++ gives at 4–8 NFE without any retraining stands in
# its place. Time per sample is wall-clock time on this machine, sampling in one batch of n; it is not
# deterministic, so we print it but never check it. In the quick profile, DDPM's 1000 evaluations per sample
# are too slow to run: its time is estimated as 1000 × one measured network call, and its FD is in
# `docs/benchmarks/solvers.md` (the benchmark runs every row with more samples).

# %%
table = []
if P.is_full:
    out, seconds, fd = run(
        ddpm_sample, 1000, generator=torch.Generator(device=P.device).manual_seed(1), progress=True
    )
    table.append(("DDPM", 1000, fd, seconds, "measured"))
else:
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(3):
            model(x_T, torch.full((n_model,), 500, device=P.device), labels=labels)
        per_call = (time.perf_counter() - start) / 3
    table.append(("DDPM", 1000, math.nan, 1000 * per_call / n_model, "time estimated, FD: see benchmark"))
for name, nfe in [("DDIM", 50), ("DPM-Solver++(2M)", 20)]:
    if (name, nfe) in model_time:
        fd = model_fd[name][model_nfe_list.index(nfe)]
        table.append((name, nfe, fd, model_time[(name, nfe)], "measured"))
    else:
        out, seconds, fd = run(samplers[name], nfe)
        table.append((name, nfe, fd, seconds, "measured"))
table.append(("distilled", "1-8", math.nan, math.nan, "no distilled model in this course"))
for nfe in [4, 8]:
    out, seconds, fd = run(dpmpp_2m_sample, nfe)
    table.append(("DPM-Solver++(2M)", nfe, fd, seconds, "in place of distillation"))
table.append(("real digits", "-", real_fd, math.nan, "training digits, same n: the small-n floor"))

# %%
# NBVAL_IGNORE_OUTPUT
print(f"mnist-cond, {n_model} samples, FD to the 500 held-out digits; wall-clock time on {P.device}")
print(f"{'sampler':<18} {'NFE':>5} {'FD':>8} {'ms / sample':>12}  note")
for name, nfe, fd, seconds, note in table:
    fd_text = "-" if math.isnan(fd) else f"{fd:.2f}"
    ms_text = "-" if math.isnan(seconds) else f"{1000 * seconds:.1f}"
    print(f"{name:<18} {nfe!s:>5} {fd_text:>8} {ms_text:>12}  {note}")

# %%
fds = {(name, nfe): fd for name, nfe, fd, _, _ in table}
assert fds[("DPM-Solver++(2M)", 8)] < fds[("DPM-Solver++(2M)", 4)]  # 4 evaluations are visibly too few
assert all(math.isfinite(fd) for (name, nfe), fd in fds.items() if name not in ("DDPM", "distilled"))

# %% [markdown]
# ## 7. Beyond 2M: a free corrector (UniPC) and a grid fitted to the problem
#
# Two ideas close most of the remaining gap at 10 evaluations.
#
# **UniPC** (Zhao et al. 2023). After a DPM-Solver++(2M) step from $x_t$ to $x_n$ we evaluate the network at
# $x_n$ anyway, for the next step. Its prediction $\hat x_0(x_n)$ is one more point of the curve $\hat x_0(\lambda)$,
# at the *end* of the step just taken. UniC redoes that step from $x_t$ with this point included, one order
# higher, and the next step starts from the corrected $x_n$; the evaluation at the uncorrected point is reused,
# so the cost stays **one evaluation per step**. Both halves have the same form,
#
# $$x_n = \frac{s_n}{s_t} x_t + \alpha_n (1 - e^{-h})\, m_0 - \alpha_n (e^{-h} - 1) \sum_k a_k \frac{m_k - m_0}{r_k},$$
#
# with $m_0 = \hat x_0$ at $x_t$, earlier (or, for the corrector, newer) predictions $m_k$ at
# $\lambda_t + r_k h$, and weights $a$ from the order conditions (`unipc_weights`). The predictor with one earlier
# point and $a = \tfrac12$ *is* DPM-Solver++(2M); we check that first.

# %%
schedule_2d = make_schedule("linear", T=1000)
grid_10 = timesteps(1000, 10)
predictor_only = unipc_sample(oracle, x_T_2d, schedule_2d, grid_10, corrector=False)
two_m = dpmpp_2m_sample(oracle, x_T_2d, schedule_2d, grid_10)
print(f"max |UniP-2 − DPM-Solver++(2M)|: {(predictor_only - two_m).abs().max().item():.1e}")
assert torch.allclose(predictor_only, two_m, atol=1e-4)

# %% [markdown]
# ### Exercise 4: UniPC's first corrector
#
# After a first-order step there is one prediction at each end of the step, $\hat x_0^{(t)}$ and
# $\hat x_0^{(n)}$ (evaluated at the predicted $x_n$). UniC with order 1 averages them, the trapezoid rule
# inside the exponential integrator:
#
# $$x_n = \frac{s_n}{s_t} x_t + \alpha_n (1 - e^{-h})\, \frac{\hat x_0^{(t)} + \hat x_0^{(n)}}{2}.$$
#
# Write `trapezoid_mine(x_t, x0_pred, x0_pred_new, alpha_bar_t, alpha_bar_n)`; the checker compares it with
# `unipc_correct(…, order=1)` and names the usual slips.


# %%
def trapezoid_mine(x_t, x0_pred, x0_pred_new, alpha_bar_t, alpha_bar_n):
    """x_n = (s_n/s_t) x_t + α_n (1 − e^{−h}) (x̂₀_t + x̂₀_n)/2, α = √ᾱ, s = √(1−ᾱ), h = λ_n − λ_t."""
    # BEGIN SOLUTION
    h = half_log_snr(alpha_bar_n) - half_log_snr(alpha_bar_t)
    ratio = math.sqrt((1 - alpha_bar_n) / (1 - alpha_bar_t))
    return ratio * x_t + math.sqrt(alpha_bar_n) * (1 - math.exp(-h)) * (x0_pred + x0_pred_new) / 2
    # END SOLUTION


# %%
result = check_unipc_trapezoid(trapezoid_mine)
assert result.passed, result  # solution-only
result

# %% [markdown]
# **A fitted grid.** Section 4 showed that the grid matters as much as the solver. Rather than guess a formula,
# fit the grid to the problem: with $x_T$ fixed and $x_{\text{ref}}$ the solver's own 1000-step output, choose
# $999 = t_0 > t_1 > \dots > t_9 \ge 0$ to minimise the mean distance $\lVert x - x_{\text{ref}} \rVert$
# (`fit_timesteps`, coordinate descent over the integers; the idea of "Align Your Steps" and GITS in its
# simplest form). A grid fitted on one batch must be judged on another, so we fit on points of their own and
# score on `x_T_2d`.

# %%
fit_x_T = mixture.noised(schedule_2d.alpha_bar[999].item()).sample(
    P.pick(quick=300, full=2000), generator=torch.Generator().manual_seed(5)
)
fit = fit_timesteps(
    unipc_sample, oracle, fit_x_T, schedule_2d, 10, sweeps=P.pick(quick=3, full=40), progress=True
)
print(f"fitted grid: {fit.timesteps.tolist()}")
print(f"path distance on the fitting points: {fit.start_loss:.4f} (start) → {fit.loss:.4f}")

held_out_ref = unipc_sample(oracle, x_T_2d, schedule_2d, timesteps(1000, ref_steps, "log"))
grids_10 = {
    "trailing": timesteps(1000, 10),
    "quadratic": timesteps(1000, 10, "quadratic"),
    "fitted": fit.timesteps,
}
fitted_race = {}
for solver_name, fn in {"DPM-Solver++(2M)": dpmpp_2m_sample, "UniPC": unipc_sample}.items():
    for grid_name, grid in grids_10.items():
        out = fn(oracle, x_T_2d, schedule_2d, grid)
        fitted_race[(solver_name, grid_name)] = ((out - held_out_ref).norm(dim=1).mean().item(), sw2(out))

# %%
# NBVAL_IGNORE_OUTPUT
print(f"10 NFE on {n_points} held-out points; sliced W2 noise floor {min(floors):.3f} to {max(floors):.3f}")
print(f"{'solver':<18}{'grid':>11}{'|x - x_ref|':>13}{'sliced W2':>11}")
for (solver_name, grid_name), (err, w) in fitted_race.items():
    print(f"{solver_name:<18}{grid_name:>11}{err:>13.4f}{w:>11.3f}")

fig, ax = plt.subplots(figsize=(8, 2.2))
for row, (grid_name, grid) in enumerate(grids_10.items()):
    lams = [half_log_snr(schedule_2d.alpha_bar[t].item()) for t in grid.tolist()]
    ax.plot(lams, [row] * len(lams), "o-", label=grid_name)
ax.set_yticks(range(len(grids_10)), list(grids_10))
ax.set_xlabel("λ = log(√ᾱ/√(1−ᾱ)) of each listed timestep (the data end is on the right)")
ax.set_title("three 10-step grids in λ")
plt.tight_layout()
plt.show()

# %%
assert fitted_race[("UniPC", "quadratic")][0] < fitted_race[("DPM-Solver++(2M)", "quadratic")][0]
assert fitted_race[("UniPC", "fitted")][0] < fitted_race[("UniPC", "quadratic")][0]  # on points it never saw
assert fit.loss < fit.start_loss

# %% [markdown]
# On the trailing grid the corrector changes almost nothing: the error there is the last, first-order jump
# from t = 99 (section 4). On the quadratic grid, which ends at t = 0, it cuts the error, and the fitted grid
# beats both hand-made ones on points it was not fitted on. The fitted grid looks odd: it spends few points at
# high noise, where the flow is nearly a straight line, and packs most of them where the mixture's modes and
# thin components form (σ between about 0.03 and 1); it may place two steps close together, which gives the
# multistep extrapolation a good slope estimate for the long step that follows. With the full profile (2000 fitting points, up to 40 sweeps) UniPC on the fitted grid comes
# within 10 % of its 1000-step sliced W2 at 10 evaluations (`docs/benchmarks/solvers.md`).
#
# A fitted grid is fitted to *one* model and schedule: refit it for another (the shipped MNIST model would need
# a 1000-step reference run per fitting batch, minutes on a GPU, which is why the course does not ship one).

# %% [markdown]
# ## Summary
#
# * In the σ frame, $\tilde x = x/\sqrt{\bar\alpha} = x_0 + \sigma\varepsilon$ with $\sigma = \sqrt{(1-\bar\alpha)/\bar\alpha}$,
#   the probability-flow ODE is $d\tilde x/d\sigma = \varepsilon$. **DDIM with η = 0 is exactly its Euler step**;
#   we checked it to rounding on the oracle and on the model.
# * Heun averages two slopes: second order, two evaluations per step (2N − 1 in all), fragile when one step spans
#   a huge ratio of σ's.
# * DPM-Solver++(2M) solves the linear part of the ODE exactly (in λ = −log σ), predicts x₀, and reuses the
#   previous prediction for a second-order correction at no extra cost; its first step and its last step, to
#   σ = 0 (λ = +∞), are first order, and the last one returns x̂₀ exactly.
# * UniPC adds a corrector that reuses the next evaluation, one order higher for free; a grid fitted to the
#   problem (`fit_timesteps`) beats formula grids on points it never saw.
# * At equal NFE, DPM-Solver++ beats DDIM on the exact oracle and on the model; how close 10 evaluations come to
#   the converged quality depends on the data and on the timestep grid (see `docs/benchmarks/solvers.md`).
#
# **Next**: running the ODE backwards (inversion) maps an image to its noise, and the noise can be edited.
