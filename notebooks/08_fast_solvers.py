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
# 2-D oracle and on the course's MNIST model (a small live run beside the shipped reference table); the
# sampler table; three exercises; then UniPC's free corrector (a fourth exercise) and a timestep grid fitted
# to the problem.

# %% [markdown]
# > **Conventions (the same in every notebook).** Formulas use the paper's time: $x_0$ is the clean image and
# > $x_t$, $t = 1, \dots, T$, is the state after $t$ noising steps. Code uses an index `t` ∈ {0, …, T−1} that is
# > the paper's $t-1$: `alpha_bar[t]` $=\prod_{s \le t}(1-\beta_s)$ is the paper's $\bar\alpha_{t+1}$, the
# > pure-noise start $x_T$ sits at index T−1, and a sampler's last step goes from its smallest index to the
# > clean image ($\bar\alpha = 1$). "$x_0$" always means the clean image, never the state at index 0. Images are
# > in [−1, 1], shape (B, C, H, W). Every quality number is printed with its 95 % interval, and a ranking is
# > stated only where the intervals separate.

# %% [markdown]
# Here the formulas' $x_t$, $\bar\alpha_t$ are in the paper's time, and every grid and every "t = …" in
# the text and the code is a code index (999 is the first step from pure noise).

# %%
import math
import time

import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm

from diffusion_course import get_profile, make_schedule, viz
from diffusion_course.checkpoints import load_lesson_checkpoint
from diffusion_course.data import load_mnist
from diffusion_course.exercises.solvers import (
    check_dpmpp_2m_combination,
    check_dpmpp_first_order_step,
    check_euler_step,
    check_unipc_trapezoid,
)
from diffusion_course.metrics import sliced_w2
from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture
from diffusion_course.reference_results import estimate, format_table, load_results
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
    timestep_grid,
    unipc_sample,
)
from diffusion_course.sampling.registry import SAMPLERS, nfe
from diffusion_course.scoring import Estimate, Scorer, compare, wilson_interval

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
# ODE is $d\tilde x/d\sigma = -\sigma\,\nabla\log p_\sigma$. We integrate it from σ at the first listed index
# down to **σ = 0** (ᾱ = 1, the clean image after the last step). The package has σ (`vp_sigma`, also
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
# "oracle": no model error, only solver error), starting from x_T at code index t = 999.

# %%
mixture = toy_mixture()
oracle = GaussianMixtureOracle(mixture, schedule)
n_points = P.pick(quick=4000, full=50_000)
x_T_2d = mixture.noised(schedule.alpha_bar[999].item()).sample(
    n_points, generator=torch.Generator().manual_seed(0)
)
grid10 = timestep_grid(schedule.T, 10)  # "trailing": 999, 899, …, 99
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
_, fine = dpmpp_2m_sample(oracle, few, schedule, timestep_grid(1000, 200, "log"), return_trajectory=True)
_, coarse = euler_sample(oracle, few, schedule, timestep_grid(1000, 5), return_trajectory=True)
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
# Euler step, as Karras et al. (2022) do: N steps cost 2N − 1 evaluations (`nfe("heun", N)` in the sampler
# registry). One warning: the trapezoid assumes ε changes linearly in σ over a step. When one step spans a
# huge ratio of σ's (157 → 26 in the first step of a 5-step trailing grid), that assumption is poor; section 4
# shows what it costs.
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
grid2 = timestep_grid(1000, 2)  # both steps first order: DPM-Solver++ with 2 steps is DDIM
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
# Now the race. Each sampler gets a budget of network evaluations, NFE ∈ {5, 10, 15, 20, 50}, and takes as
# many steps as fit in it; the samplers and their count per step come from the sampler registry
# (`SAMPLERS[name].fn`, `nfe`, `steps_within`): one per step for DDIM and DPM-Solver++, 2N − 1 for N Heun steps. Euler is DDIM (section 1), so it is not run again. They
# use the course's "trailing" grid (code indices 999, 899, …, 99 for 10 steps), and DPM-Solver++ runs once
# more on the "log" grid, which ends at index 0 (999, 463, 214, 99, …, 1, 0). All start from the same x_T
# (index 999). Two measures:
#
# * the **mean distance** ‖x − x_ref‖ to an accurate solution of the ODE from the same x_T (DPM-Solver++ with
#   many steps on the "log" grid): the solver's own error, free of sampling noise;
# * **sliced W2** to samples of the mixture (`metrics.sliced_w2`): how good the *distribution* is. Its value
#   moves with the reference sample it is measured against, so we measure against five independent
#   reference samples and print the mean ± the standard deviation (sd) over them. Two runs are ranked only
#   where their ranges mean ± 2 sd do not overlap (`compare`). An exact sample of the mixture is not at
#   distance 0 either: we print that **noise floor** too.

# %%
budgets = [5, 10, 15, 20, 50]
keys = {"DDIM": "ddim", "Heun": "heun", "DPM-Solver++(2M)": "dpmpp2m"}  # names in the sampler registry
samplers = {name: SAMPLERS[key].fn for name, key in keys.items()}
race = [(name, "trailing") for name in samplers] + [("DPM-Solver++(2M)", "log")]


def steps_for(name, budget):
    """The most steps sampler ``name`` can take within ``budget`` evaluations (counted by the registry)."""
    return SAMPLERS[keys[name]].steps_within(budget)


mixture_refs = [
    mixture.sample(n_points, generator=torch.Generator().manual_seed(seed)) for seed in range(3, 8)
]


def sw2(samples):
    """Sliced W2 to the mixture over five reference draws: the mean, and mean ± 2 sd as its range."""
    values = torch.tensor(
        [
            sliced_w2(samples, ref, n_projections=64, generator=torch.Generator().manual_seed(10 + k))
            for k, ref in enumerate(mixture_refs)
        ]
    )
    mean, sd = values.mean().item(), values.std().item()
    return Estimate("sliced W2", mean, mean - 2 * sd, mean + 2 * sd, len(samples), True, "±2 sd, 5 draws")


def show(e):
    """'mean ± sd' of a sliced-W2 estimate."""
    return f"{e.value:.3f} ± {e.half_width / 2:.3f}"


floor = sw2(mixture.sample(n_points, generator=torch.Generator().manual_seed(20)))
ref_steps = P.pick(quick=200, full=1000)
reference = dpmpp_2m_sample(oracle, x_T_2d, schedule, timestep_grid(1000, ref_steps, "log"))


def error(out):
    return (out - reference).norm(dim=1).mean().item()


oracle_nfe, oracle_sw2, oracle_err = {}, {}, {}
for name, strategy in race:
    curve = (name, strategy)
    oracle_nfe[curve], oracle_sw2[curve], oracle_err[curve] = [], [], []
    for budget in budgets:
        steps = steps_for(name, budget)
        out = samplers[name](oracle, x_T_2d, schedule, timestep_grid(1000, steps, strategy))
        oracle_nfe[curve].append(nfe(keys[name], steps))
        oracle_sw2[curve].append(sw2(out))
        oracle_err[curve].append(error(out))

# %%
# NBVAL_CHECK_OUTPUT
print(f"{n_points} points; reference: DPM-Solver++, {ref_steps} steps, log grid")
print(f"sliced W2 of an exact sample of the mixture (noise floor): {show(floor)}")
print(f"{'sampler':<18}{'grid':>9}{'NFE':>5}{'|x - x_ref|':>13}   sliced W2 (mean ± sd, 5 reference draws)")
for name, strategy in race:
    curve = (name, strategy)
    for used, e, w in zip(oracle_nfe[curve], oracle_err[curve], oracle_sw2[curve]):
        print(f"{name:<18}{strategy:>9}{used:>5}{e:>13.4f}   {show(w)}")
dpm_vs_ddim = [
    compare(d, e).verdict
    for d, e in zip(oracle_sw2[("DPM-Solver++(2M)", "trailing")], oracle_sw2[("DDIM", "trailing")])
]
print("sliced W2, DPM-Solver++(2M) against DDIM (trailing), NFE", budgets, ":", dpm_vs_ddim)
print("sliced W2, DPM-Solver++(2M) on the log grid at 50 NFE against the noise floor:",
      compare(oracle_sw2[("DPM-Solver++(2M)", "log")][4], floor).verdict)  # fmt: skip

# %%
ddim_err, heun_err = oracle_err[("DDIM", "trailing")], oracle_err[("Heun", "trailing")]
dpm_err, dpm_log_err = oracle_err[("DPM-Solver++(2M)", "trailing")], oracle_err[("DPM-Solver++(2M)", "log")]
assert [nfe("heun", steps_for("Heun", b)) for b in budgets] == [5, 9, 15, 19, 49]
assert all(d < e for d, e in zip(dpm_err, ddim_err))  # DPM-Solver++ below DDIM at every budget
assert 3 < ddim_err[1] / ddim_err[4] < 7  # first order: 5× the NFE, between 3 and 7 times less error
assert dpm_log_err[1] / dpm_log_err[4] > 15  # second order on a grid that ends at index 0
assert all(h > e for h, e in zip(heun_err, ddim_err))  # Heun above DDIM at every budget (trailing grid)
assert dpm_vs_ddim[:2] == ["A better", "A better"]  # sliced W2 separates them at 5 and 10 NFE
if not P.is_full:  # 4000 points: from 15 NFE on, the ranges overlap
    assert set(dpm_vs_ddim[2:]) == {"indistinguishable"}
    assert compare(oracle_sw2[("DPM-Solver++(2M)", "log")][4], floor).verdict == "indistinguishable"

# %% [markdown]
# What the numbers say:
#
# * DDIM (= Euler) is first order: 5 times the NFE (10 → 50) gives between 3 and 7 times less error.
# * DPM-Solver++(2M) has less error than DDIM at every budget, at the same cost per step.
# * On the "log" grid, which ends at index 0 (σ = 0.01), the second order shows: from 10 to 50 NFE the error
#   falls by more than 15 (a second-order method would give 5² = 25, a first-order one 5).
# * On the trailing grid DPM-Solver++'s error falls only about as fast as DDIM's. The cell below looks at
#   the reason, the **last step**.
# * In sliced W2, DPM-Solver++ on the trailing grid is better than DDIM at 5 and 10 NFE (the ranges
#   separate). With the quick profile's 4000 points, from 15 NFE on the two are indistinguishable, and
#   DPM-Solver++ on the log grid at 50 NFE is indistinguishable from an exact sample of the mixture: the
#   solver error is then below what this metric resolves at this n.
#
# **The last step.** On the trailing grid with N steps the last listed index is 1000/N − 1: code index
# t = 99 for N = 10, 19 for N = 50. From there every solver here takes a first-order step (x = x̂₀) straight
# to the clean image. How big is that step, and how much of the error is it?

# %%
last_step = {}
for steps, budget_index in ((10, 1), (20, 3), (50, 4)):
    t_last = int(timestep_grid(1000, steps)[-1])
    last_step[steps] = {
        "t": t_last,
        "1 - alpha_bar": 1 - schedule.alpha_bar[t_last].item(),
        "sigma": schedule.sigmas[t_last].item(),
        "error": dpm_err[budget_index],  # DPM-Solver++(2M), trailing grid, from the race above
    }
# the 10-step run up to index 99, then an accurate finish: DPM-Solver++ through every index 99, 98, …, 0
out, path = dpmpp_2m_sample(oracle, x_T_2d, schedule, timestep_grid(1000, 10), return_trajectory=True)
finish = dpmpp_2m_sample(oracle, path.xs[-2], schedule, torch.arange(int(path.timesteps[-1]), -1, -1))
finish_error = error(finish)
print(f"{'N':>3} {'last t':>7} {'1 - alpha_bar':>14} {'sigma':>7} {'|x - x_ref|':>12}")
for steps, row in last_step.items():
    print(
        f"{steps:>3} {row['t']:>7} {row['1 - alpha_bar']:>14.4f} {row['sigma']:>7.3f} {row['error']:>12.4f}"
    )
print(
    f"N = 10, the same run but finished accurately from index {int(path.timesteps[-1])}: {finish_error:.4f}"
)
sigma_ratio = last_step[10]["sigma"] / last_step[50]["sigma"]
error_ratio = last_step[10]["error"] / last_step[50]["error"]
print(
    f"N = 10 → 50: σ at the last step's start falls {sigma_ratio:.2f}×, DPM-Solver++'s error {error_ratio:.2f}×"
)

# %%
assert [row["t"] for row in last_step.values()] == [99, 49, 19]
assert 0.09 < last_step[10]["1 - alpha_bar"] < 0.11 and 0.3 < last_step[10]["sigma"] < 0.4
assert abs(error(out) - last_step[10]["error"]) < 1e-6  # the same run as in the race
assert finish_error < 0.5 * last_step[10]["error"]  # the last step is more than half of the error
assert abs(error_ratio / sigma_ratio - 1) < 0.25 and error_ratio < 7

# %% [markdown]
# At N = 10 the last step starts at code index t = 99, where 1 − ᾱ ≈ 0.10 and σ ≈ 0.34: one step covers the
# whole end of the path. Over it the slope ε is far from constant (the mixture's thinnest components are
# 0.06–0.08 wide, less than that σ, so x̂₀ is still moving), and finishing the same run accurately from
# index 99 instead cuts its error by more than half. σ at the start of the last step falls only about like
# 1/N on this schedule (printed: from N = 10 to 50 by a factor near 4.5), and in this run DPM-Solver++'s
# error on the trailing grid falls by nearly the same factor (within 25 %), far from the 25 of a
# second-order method. A grid that ends at index 0 (σ = 0.01), like "log", makes the last jump small.
#
# Two more lessons from grids:
#
# * **Heun** pays two evaluations per step. On the trailing grid its error is above DDIM's at every budget
#   in the table: at equal NFE it takes about half the steps, so each step is longer, and its last step
#   (Euler, to σ = 0) starts higher (code index 199, σ = 0.72, at 9 NFE against index 99, σ = 0.34, for
#   DDIM at 10). Its first step with 5 steps jumps from σ = 157 to σ ≈ 26 (index 999 → 799), a long way to
#   assume, as the trapezoid does, that the slope changes linearly in σ. On the "log" grid with 5 steps the first step goes
#   from σ = 157 to σ ≈ 0.63 (index 177) and averages the slope of pure noise with a slope near the data:
#   Heun diverges there (next cell).
# * A grid can also break the **multistep extrapolation**. The "linspace" grid for 10 steps ends
#   222 → 111 → 0: the step 111 → 0 is about 4.7 times longer in λ than the one before, so r ≈ 0.21 and the
#   correction weight 1/(2r) ≈ 2.4 extrapolates far. There DPM-Solver++(2M) is *worse* than DDIM:

# %%
heun_log_sw2 = sw2(heun_sample(oracle, x_T_2d, schedule, timestep_grid(1000, 5, "log")))
linspace_10 = timestep_grid(1000, 10, "linspace")
r_lin, c_lin = dpmpp_2m_coefficients(*(schedule.alpha_bar[t].item() for t in (222, 111, 0)))
linspace_race = {
    name: samplers[name](oracle, x_T_2d, schedule, linspace_10) for name in ("DDIM", "DPM-Solver++(2M)")
}
linspace_sw2 = {name: sw2(out) for name, out in linspace_race.items()}
print(f"Heun, 5 steps (9 NFE), log grid {timestep_grid(1000, 5, 'log').tolist()}: sliced W2 {show(heun_log_sw2)}")
print(f"linspace grid {linspace_10.tolist()}: r = {r_lin:.3f}, 1/(2r) = {c_lin:.2f}")
for name, out in linspace_race.items():
    print(f"  {name:<18} 10 NFE: |x - x_ref| {error(out):.4f}, sliced W2 {show(linspace_sw2[name])}")
linspace_verdict = compare(linspace_sw2["DPM-Solver++(2M)"], linspace_sw2["DDIM"]).verdict
print(f"  sliced W2, DPM-Solver++(2M) against DDIM: {linspace_verdict}")

# %%
assert heun_log_sw2.value > 10 * oracle_sw2[("Heun", "trailing")][1].value  # diverged
sigma_at = lambda t: schedule.sigmas[t].item()  # noqa: E731
heun_5, heun_5_log = timestep_grid(1000, 5).tolist(), timestep_grid(1000, 5, "log").tolist()
assert heun_5[:2] == [999, 799] and abs(sigma_at(799) - 26) < 0.5 and heun_5[-1] == 199
assert abs(sigma_at(199) - 0.72) < 0.005 and abs(sigma_at(99) - 0.34) < 0.005
assert heun_5_log[1] == 177 and abs(sigma_at(177) - 0.63) < 0.005
assert abs(r_lin - 0.21) < 0.01 and abs(c_lin - 2.4) < 0.05
assert linspace_verdict == "B better"  # DDIM better than DPM-Solver++(2M) on this grid
assert error(linspace_race["DPM-Solver++(2M)"]) > error(linspace_race["DDIM"])

# %% [markdown]
# Multistep solvers want steps whose lengths in λ change slowly; diffusers avoids this trap with
# `lower_order_final`, a first-order last step below 15 steps (notebook 10).
#
# ## 5. On the shipped MNIST model
#
# The same race with the class-conditional U-Net (`mnist-cond`, linear schedule, T = 1000; no guidance,
# labels 0–9 in turn), all samplers from the same x_T. Quality comes from the course's `Scorer`, built on
# the digit classifier and the 500 held-out real digits: the Fréchet distance (FD) of the classifier's
# features, KID, and label accuracy (does the digit look like its label), each with its 95 % interval, and
# the same scores for real training digits (the floor, the best to expect at that n). FD is biased upwards
# at small n, and with 128 features and fewer than about 150 samples it means little, so the live run
# (n = 24 in the quick profile, which shows the method, not a verdict) prints label accuracy with its Wilson
# interval only. The verdicts come from the shipped reference table below it (n = 1000 per cell).
#
# To run this lesson on your own model from notebook 02 ("Train your own"), set `MODEL = "mine"` below;
# the shipped reference tables stay those of `mnist-cond`.

# %%
MODEL = "mnist-cond"  # or "mine": your model from notebook 02
checkpoint = load_lesson_checkpoint(MODEL, device=P.device)
model, schedule, info = checkpoint.model, checkpoint.schedule, checkpoint.info
scorer = Scorer()
print(f"model: {info['num_parameters']:,} parameters; schedule {schedule}")

n_model = P.pick(quick=24, full=1000)
model_budgets = P.pick(quick=[5, 10, 20], full=budgets)
x_T = torch.randn(n_model, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(P.device)
labels = (torch.arange(n_model) % 10).to(P.device)
train_images, train_labels = load_mnist("train")
same_labels = torch.stack([(train_labels == k).nonzero()[i // 10, 0] for i, k in enumerate(labels.tolist())])


def label_accuracy(images):
    """How often the Scorer's classifier reads ``labels`` in the images, with the Wilson 95 % interval."""
    correct = int((scorer.predictions(images) == labels.cpu()).sum())
    low, high = wilson_interval(correct, len(images))
    return Estimate("label accuracy", correct / len(images), low, high, len(images), False, "Wilson 95 %")


def run(sampler, steps, **kwargs):
    """Samples and wall-clock seconds per sample of one sampler run from the shared x_T."""
    start = time.perf_counter()
    out = sampler(model, x_T, schedule, timestep_grid(schedule.T, steps), labels=labels, **kwargs)
    return out, (time.perf_counter() - start) / n_model


model_time, model_samples = {}, {}
for name, budget in tqdm([(n, b) for n in samplers for b in model_budgets], desc="samplers × NFE"):
    out, seconds = run(samplers[name], steps_for(name, budget))
    model_time[(name, budget)], model_samples[(name, budget)] = seconds, out.cpu()
model_accuracy = {name: label_accuracy(model_samples[(name, 10)]) for name in samplers}
real = label_accuracy(train_images[same_labels])  # n real training digits with the same labels
euler_5 = euler_sample(model, x_T, schedule, timestep_grid(schedule.T, 5), labels=labels).cpu()
gap = (euler_5 - model_samples[("DDIM", 5)]).abs().max().item()

# %%
# NBVAL_IGNORE_OUTPUT
print(f"max |Euler − DDIM| with the model, 5 steps: {gap:.1e}")
print(f"this run: n = {n_model} samples per sampler at 10 NFE (Heun: {nfe('heun', steps_for('Heun', 10))})")
for name, accuracy in model_accuracy.items():
    print(f"  {name:<18} {accuracy}")
print(f"  {'real digits':<18} {real}")

# %%
assert torch.allclose(euler_5, model_samples[("DDIM", 5)], atol=1e-3)
if not P.is_full:  # n = 24: the three intervals overlap
    for a in samplers:
        for b in samplers:
            assert a == b or compare(model_accuracy[a], model_accuracy[b]).verdict == "indistinguishable"

# %% [markdown]
# Euler and DDIM give the same digits with the trained model too (to 10⁻³ in a pixel, float32 over 5 steps).
# The label accuracies of this run are printed with their intervals; at the quick profile's n = 24 the
# intervals of the three samplers overlap (asserted), so they rank nothing. The shipped reference table,
# n = 1000 per cell with the same seeds for every cell, is where the comparisons are made. Its rows are
# samplers and its columns budgets; the number of network evaluations of each cell comes from the sampler
# registry:

# %%
# NBVAL_IGNORE_OUTPUT
solvers = load_results("solvers")
print(solvers["command"], f"({solvers['device']}, {solvers['seconds']:.0f} s)")
print(format_table(solvers, "fd"))
print(format_table(solvers, "label_accuracy"))
shipped = {}  # (sampler, NFE) -> (FD, label accuracy)
for cell in solvers["cells"]:
    used = nfe(cell["sampler"], cell["steps"])
    shipped[(cell["sampler"], used)] = tuple(
        estimate(solvers, cell["row"], cell["col"], metric) for metric in ("fd", "label_accuracy")
    )
print(f"\n{'sampler':<9}{'NFE':>4}  {'FD':<34}label accuracy")
for (sampler, used), (fd, acc) in sorted(shipped.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    print(f"{sampler:<9}{used:>4}  {fd!s:<34}{acc}")
shipped_floor = estimate(solvers, "floor", "", "fd")
print(f"real digits, n = {solvers['n']}: {shipped_floor}")

# %%
fd_of = {key: fd for key, (fd, _) in shipped.items()}
accuracy_of = {key: acc for key, (_, acc) in shipped.items()}
dpm_vs_ddim_10 = compare(fd_of[("dpmpp2m", 10)], fd_of[("ddim", 10)])
print(f"FD at 10 NFE, DPM-Solver++(2M) against DDIM: {dpm_vs_ddim_10}")
for used in (10, 20):  # Euler is DDIM: the same samples, the same scores
    assert abs(fd_of[("euler", used)].value - fd_of[("ddim", used)].value) < 1e-3
    assert accuracy_of[("euler", used)].value == accuracy_of[("ddim", used)].value
pairs = [
    (a, b) for a in shipped for b in shipped if a < b and abs(a[1] - b[1]) <= 1
]  # equal NFE (Heun: 9, 19)
assert len(pairs) == 20
for a, b in pairs:  # no two samplers separate at equal NFE, in FD or in label accuracy
    assert compare(fd_of[a], fd_of[b]).verdict == "indistinguishable", (a, b)
    assert compare(accuracy_of[a], accuracy_of[b]).verdict == "indistinguishable", (a, b)
assert (
    fd_of[("dpmpp2m", 10)].value < fd_of[("ddim", 10)].value and dpm_vs_ddim_10.n_to_separate > solvers["n"]
)
shipped_accuracy_floor = estimate(solvers, "floor", "", "label_accuracy")
for key in shipped:  # FD: indistinguishable from real digits; label accuracy: below them
    assert compare(fd_of[key], shipped_floor).verdict == "indistinguishable", key
    assert compare(accuracy_of[key], shipped_accuracy_floor).verdict == "B better", key
assert all(0.94 <= acc.value <= 0.96 for acc in accuracy_of.values())

# %% [markdown]
# What the shipped table says (n = 1000 per cell; each sentence is asserted in the cell above):
#
# * Euler and DDIM get the same scores (FD equal to 10⁻³), as they must: they are the same sampler.
# * At equal NFE (10, or 20; Heun 9 and 19) no two samplers can be told apart, in FD or in label accuracy.
#   DPM-Solver++(2M)'s FD at 10 NFE is lower than DDIM's, but the intervals overlap: indistinguishable at
#   n = 1000, and `compare` estimates (printed above) the n per cell that would separate them if the
#   difference held.
# * Every sampler's FD is indistinguishable from that of 1000 real training digits, while every sampler's
#   label accuracy (between 0.94 and 0.96) is below the real digits'. The model's digits are recognisably
#   worse than real ones whatever the sampler, and at 10 or 20 evaluations the choice of solver does not
#   show at this n. The oracle of section 4, which has no model error, is where the solvers' differences
#   are measurable.
#
# One picture for both races: the oracle's solver error (with 1/NFE and 1/NFE² guides), the oracle's sliced
# W2 (mean ± 2 sd over the reference draws, with the noise floor) and the model's FD from the shipped table
# (with its interval and the real-digit floor at the same n). Lower is better; the x-axis is what you pay,
# network evaluations.

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
    w = oracle_sw2[curve]
    axes[1].errorbar(
        oracle_nfe[curve],
        [e.value for e in w],
        yerr=[[e.value - e.low for e in w], [e.high - e.value for e in w]],
        fmt=style,
        capsize=2,
        label=label,
    )
axes[0].plot(budgets, [ddim_err[1] * 10 / n for n in budgets], color="0.6", ls=":", lw=1, label="∝ 1/NFE")
axes[0].plot(
    budgets, [dpm_log_err[1] * 100 / n**2 for n in budgets], color="0.3", ls=":", lw=1, label="∝ 1/NFE²"
)
axes[0].set_title(f"oracle: mean |x − x_ref| ({n_points} points)")
axes[1].axhspan(max(floor.low, 1e-3), floor.high, color="0.8", alpha=0.6, label="noise floor (exact sample)")
axes[1].set_title("oracle: sliced W2 to the mixture")
for sampler in dict.fromkeys(s for s, _ in shipped):
    points = sorted((used, fd) for (s, used), (fd, _) in shipped.items() if s == sampler)
    axes[2].errorbar(
        [u for u, _ in points],
        [fd.value for _, fd in points],
        yerr=[[fd.value - fd.low for _, fd in points], [fd.high - fd.value for _, fd in points]],
        fmt="o-",
        capsize=3,
        label=sampler,
    )
axes[2].axhspan(shipped_floor.low, shipped_floor.high, color="0.8", alpha=0.6, label="real digits")
axes[2].set_title(f"mnist-cond: FD to held-out digits (shipped, n = {solvers['n']})")
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
    rows = torch.cat([model_samples[(name, budget)][:10] for budget in model_budgets])
    viz.show_images(rows.clamp(-1, 1), nrow=10, ax=ax, title=f"{name}: NFE {model_budgets} (rows)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. The sampler table, measured
#
# The usual summary of sampling speed: DDPM with 1000 steps, DDIM with 50, DPM-Solver++ with 20, and
# *distilled* samplers (progressive distillation, consistency models) with 1–8 evaluations. A distilled
# sampler is a retrained network, a student of `mnist-cond`: notebook 12 trains them and ships
# `mnist-distilled-1` … `-8`. Its rows below are read from that shipped reference table (n = 500 per cell), not
# sampled live, beside what DPM-Solver++ gives at 4–8 NFE without any retraining. The NFE column comes from
# the sampler registry. Time per sample is wall-clock time on this
# machine, sampling in one batch of n; it is not deterministic, so we print it but never check it. In the
# quick profile, DDPM's 1000 evaluations per sample are too slow to run: its time is estimated as 1000 × one
# measured network call, and it is not scored. Quality is label accuracy with its Wilson interval, as in
# section 5, beside that of n real digits with the same labels.

# %%
table = []
if P.is_full:
    out, seconds = run(
        ddpm_sample, 1000, generator=torch.Generator(device=P.device).manual_seed(1), progress=True
    )
    table.append(("DDPM", nfe("ddpm", 1000), label_accuracy(out), seconds, "measured"))
else:
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(3):
            model(x_T, torch.full((n_model,), 500, device=P.device), labels=labels)
        per_call = (time.perf_counter() - start) / 3
    table.append(
        ("DDPM", nfe("ddpm", 1000), math.nan, 1000 * per_call / n_model, "time estimated, not scored")
    )
for name, key, steps in [("DDIM", "ddim", 50), ("DPM-Solver++(2M)", "dpmpp2m", 20)]:
    if (name, steps) in model_samples:
        out, seconds = model_samples[(name, steps)], model_time[(name, steps)]
    else:
        out, seconds = run(samplers[name], steps)
    table.append((name, nfe(key, steps), label_accuracy(out), seconds, "measured"))
distilled = load_results("distillation")
for steps in [8, 4]:
    shipped = estimate(distilled, "distilled students, DDIM", f"NFE = {steps}", "label_accuracy")
    table.append((f"distilled ({steps})", steps, shipped, math.nan, f"shipped table, n = {distilled['n']}: nb 12"))
for steps in [4, 8]:
    out, seconds = run(dpmpp_2m_sample, steps)
    table.append(("DPM-Solver++(2M)", nfe("dpmpp2m", steps), label_accuracy(out), seconds, "no retraining"))
table.append(("real digits", "-", real, math.nan, "training digits, same labels: the floor"))

# %%
# NBVAL_IGNORE_OUTPUT
print(f"mnist-cond, n = {n_model} samples per row; wall-clock time on {P.device}")
print(f"{'sampler':<18} {'NFE':>5} {'label accuracy [95 %]':>22} {'ms / sample':>12}  note")
for name, used, accuracy, seconds, note in table:
    acc_text = (
        "-"
        if isinstance(accuracy, float)
        else f"{accuracy.value:.3f} [{accuracy.low:.3f}, {accuracy.high:.3f}]"
    )
    ms_text = "-" if math.isnan(seconds) else f"{1000 * seconds:.1f}"
    print(f"{name:<18} {used!s:>5} {acc_text:>22} {ms_text:>12}  {note}")
scored = {(name, used): accuracy for name, used, accuracy, _, note in table
          if not isinstance(accuracy, float) and not note.startswith("shipped")}  # fmt: skip
four_vs_eight = compare(scored[("DPM-Solver++(2M)", 4)], scored[("DPM-Solver++(2M)", 8)])
print(f"DPM-Solver++(2M), 4 against 8 NFE: {four_vs_eight}")

# %%
assert all(0 <= a.low <= a.value <= a.high <= 1 and a.n == n_model for a in scored.values())
assert [used for name, used, *_ in table if name == "DPM-Solver++(2M)"] == [20, 4, 8]

# %% [markdown]
# In this run (printed above) each label accuracy comes with its interval; at the quick profile's n = 24
# they are wide, and the `compare` line says whether 4 and 8 evaluations can be told apart at this n. For
# DPM-Solver++(2M) at 20 NFE the shipped table of section 5 has the n = 1000 answer. At 2, 4 and 8 NFE the
# shipped `distillation` table (notebook 12) scores DPM-Solver++(2M) and the distilled students side by
# side at n = 500; notebook 12 reads the comparison from it.

# %% [markdown]
# ## 7. Beyond 2M: a free corrector (UniPC) and a grid fitted to the problem
#
# Two more ideas for 10 evaluations; on the oracle we measure what each does to the solver's error.
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
grid_10 = timestep_grid(1000, 10)
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
# code indices $999 = t_0 > t_1 > \dots > t_9 \ge 0$ to minimise the mean distance $\lVert x - x_{\text{ref}}
# \rVert$ (`fit_timesteps`, coordinate descent over the integers; the idea of "Align Your Steps" and GITS in
# its simplest form). A grid fitted on one batch must be judged on another, so we fit on points of their own
# and score on `x_T_2d`.

# %%
fit_x_T = mixture.noised(schedule_2d.alpha_bar[999].item()).sample(
    P.pick(quick=300, full=2000), generator=torch.Generator().manual_seed(5)
)
fit = fit_timesteps(
    unipc_sample, oracle, fit_x_T, schedule_2d, 10, sweeps=P.pick(quick=3, full=40), progress=True
)
print(f"fitted grid: {fit.timesteps.tolist()}")
print(f"σ at its indices: {[round(schedule_2d.sigmas[t].item(), 3) for t in fit.timesteps.tolist()]}")
print(f"path distance on the fitting points: {fit.start_loss:.4f} (start) → {fit.loss:.4f}")

held_out_ref = unipc_sample(oracle, x_T_2d, schedule_2d, timestep_grid(1000, ref_steps, "log"))
converged = sw2(held_out_ref)
grids_10 = {
    "trailing": timestep_grid(1000, 10),
    "quadratic": timestep_grid(1000, 10, "quadratic"),
    "fitted": fit.timesteps,
}
fitted_race = {}
for solver_name, fn in {"DPM-Solver++(2M)": dpmpp_2m_sample, "UniPC": unipc_sample}.items():
    for grid_name, grid in grids_10.items():
        out = fn(oracle, x_T_2d, schedule_2d, grid)
        fitted_race[(solver_name, grid_name)] = ((out - held_out_ref).norm(dim=1).mean().item(), sw2(out))

# %%
# NBVAL_IGNORE_OUTPUT
print(f"10 NFE on {n_points} held-out points; sliced W2 as mean ± sd over 5 reference draws")
print(f"UniPC, {ref_steps} steps (converged): sliced W2 {show(converged)}; noise floor {show(floor)}")
print(f"{'solver':<18}{'grid':>11}{'|x - x_ref|':>13}{'sliced W2':>17}   against converged")
for (solver_name, grid_name), (err, w) in fitted_race.items():
    print(f"{solver_name:<18}{grid_name:>11}{err:>13.4f}{show(w):>17}   {compare(w, converged).verdict}")

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
err_of = {key: err for key, (err, _) in fitted_race.items()}
assert abs(err_of[("UniPC", "trailing")] / err_of[("DPM-Solver++(2M)", "trailing")] - 1) < 0.01
assert err_of[("UniPC", "quadratic")] < err_of[("DPM-Solver++(2M)", "quadratic")]
assert err_of[("UniPC", "fitted")] < err_of[("UniPC", "quadratic")]  # on points it never saw
assert fit.loss < fit.start_loss
if not P.is_full:  # 4000 points: sliced W2 cannot separate any of them from the converged sampler
    assert all(compare(w, converged).verdict == "indistinguishable" for _, w in fitted_race.values())

# %% [markdown]
# In path distance, the measure without sampling noise: on the trailing grid the corrector changes the error
# by less than 1 %; most of the error there comes from the last, first-order jump from code index t = 99
# (section 4), which no corrector touches. On the quadratic grid, which ends at index 0, UniPC has less error
# than DPM-Solver++(2M), and UniPC on the fitted grid has less error than on the quadratic grid, on points
# the grid was not fitted on. In sliced W2, with the quick profile's 4000 points, none of these 10-NFE runs
# can be told apart from the converged sampler: the differences are inside the spread over reference draws.
#
# The fitted grid of this run is printed above with σ at each index: after the first step from σ = 157 it
# spends its points at moderate and small σ, where the mixture's modes and thin components form, and it may
# place some steps close together; with a different fitting batch or more sweeps it comes out different. In
# the benchmark (`docs/benchmarks/solvers.md`: 2000 fitting points, 25 sweeps, scored on 20,000 other points
# with 8 reference draws) UniPC on its fitted grid reached sliced W2 0.0188 ± 0.0022 against 0.0174 for 1000
# steps: indistinguishable from the converged sampler at that metric's resolution.
#
# A fitted grid is fitted to *one* model and schedule: refit it for another (the shipped MNIST model would need
# a 1000-step reference run per fitting batch, minutes on a GPU, which is why the course does not ship one).

# %% [markdown]
# ## Summary
#
# * In the σ frame, $\tilde x = x/\sqrt{\bar\alpha} = x_0 + \sigma\varepsilon$ with $\sigma = \sqrt{(1-\bar\alpha)/\bar\alpha}$,
#   the probability-flow ODE is $d\tilde x/d\sigma = \varepsilon$. **DDIM with η = 0 is exactly its Euler step**;
#   we checked it to rounding on the oracle and with the trained model.
# * Heun averages two slopes: second order, two evaluations per step (2N − 1 in all). On the oracle's trailing
#   grid its error was above DDIM's at every budget we tried, and on a 5-step "log" grid, whose first step
#   spans σ = 157 → 0.63, it diverged.
# * DPM-Solver++(2M) solves the linear part of the ODE exactly (in λ = −log σ), predicts x₀, and reuses the
#   previous prediction for a second-order correction at no extra cost; its first step and its last step, to
#   σ = 0 (λ = +∞), are first order, and the last one returns x̂₀ exactly. On the oracle it had less error
#   than DDIM at every budget on the trailing grid, and on the "log" grid its error fell by more than 15
#   from 10 to 50 NFE. On the trailing grid the last step, from σ ≈ 0.34 at 10 steps, held it back; on the
#   "linspace" grid its extrapolation over a long last step made it worse than DDIM.
# * On the trained MNIST model the shipped reference table (n = 1000 per cell) cannot tell DDIM, Euler,
#   Heun, DPM-Solver++(2M) and UniPC apart at about 10 or 20 NFE, in FD or in label accuracy; all of them
#   have a lower label accuracy than real digits. The live run of this notebook (n = 24 in
#   the quick profile) only shows how the scores and their intervals are made.
# * UniPC adds a corrector that reuses the next evaluation, one order higher for free; it lowered the path
#   error on the quadratic grid, and a grid fitted to the problem (`fit_timesteps`) lowered it further on
#   points it never saw. Sliced W2 at 4000 points could not tell these 10-NFE runs from a converged one.
#
# **Next**: running the ODE backwards (inversion) maps an image to its noise, and the noise can be edited.
