# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · DDPM sampling: running the forward process backwards
#
# Notebook 02 trained a network ε_θ(x_t, t, y) that looks at a noisy digit x_t and predicts the noise ε that
# was added to it. That network is all a diffusion model learns. To **generate** a digit we start from pure
# noise, $x_T \sim \mathcal N(0, I)$, and walk the chain backwards, t = T, T−1, …, 1 (code indices T−1, …, 0),
# removing a little noise at each step until the clean image $x_0$ is left.
#
# Each backward step needs the distribution of the previous state, q(x_{t−1} | x_t). That one is hopeless:
# it depends on the whole data distribution. But **given the clean image x_0** it is a Gaussian we can write
# down exactly, and the network tells us what x_0 probably is. This is the DDPM sampler of Ho et al. (2020).
#
# **In this notebook**: the reverse step from Bayes' rule and a numerical check of it; the step written
# with ε; the two choices of the step's noise, β_t and β̃_t, and what they mean; 1000-step sampling on the
# trained model, with x_t and the predicted x̂_0 side by side along the way; why 1000 steps are slow, and
# that the same step also runs with bigger jumps; and three exercises.

# %% [markdown]
# > **Conventions (the same in every notebook).** Formulas use the paper's time: $x_0$ is the clean image and
# > $x_t$, $t = 1, \dots, T$, is the state after $t$ noising steps. Code uses an index `t` ∈ {0, …, T−1} that is
# > the paper's $t-1$: `alpha_bar[t]` $=\prod_{s \le t}(1-\beta_s)$ is the paper's $\bar\alpha_{t+1}$, the
# > pure-noise start $x_T$ sits at index T−1, and a sampler's last step goes from its smallest index to the
# > clean image ($\bar\alpha = 1$). "$x_0$" always means the clean image, never the state at index 0. Images are
# > in [−1, 1], shape (B, C, H, W). Every quality number is printed with its 95 % interval, and a ranking is
# > stated only where the intervals separate.

# %%
import time

import matplotlib.pyplot as plt
import torch

from diffusion_course import get_profile, make_schedule, viz, widgets
from diffusion_course.checkpoints import load_lesson_checkpoint
from diffusion_course.data import load_mnist
from diffusion_course.exercises.ddpm import check_ddpm_step, check_posterior_mean, check_x0_from_eps
from diffusion_course.sampling import ddpm_posterior, ddpm_sample, ddpm_step, predict_x0, timestep_grid
from diffusion_course.widgets.trajectory import trajectory_frames

P = get_profile()
print(P)

# %% [markdown]
# ## 1. The reverse step, from Bayes' rule
#
# Notation as in the box: t = 1, …, T, α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s, and x_0 is the clean image, so
# **ᾱ_0 = 1** and the step from t = 1 lands on the clean image. In code, at index i = t − 1,
# `schedule.alpha_bar[i]` is ᾱ_t and `schedule.alpha_bar_prev[i]` is ᾱ_{t−1}, with
# `alpha_bar_prev[0]` = ᾱ_0 = 1.
#
# Bayes' rule turns the forward step around. Because the forward process is a Markov chain,
# q(x_t | x_{t−1}, x_0) = q(x_t | x_{t−1}), and
#
# $$q(x_{t-1} \mid x_t, x_0) = \frac{q(x_t \mid x_{t-1})\; q(x_{t-1} \mid x_0)}{q(x_t \mid x_0)},
# \qquad q(x_t \mid x_{t-1}) = \mathcal N(\sqrt{\alpha_t}\,x_{t-1},\ \beta_t I),\quad
# q(x_{t-1} \mid x_0) = \mathcal N(\sqrt{\bar\alpha_{t-1}}\,x_0,\ (1-\bar\alpha_{t-1}) I).$$
#
# The denominator does not depend on x_{t−1}. As a function of x_{t−1} (one pixel at a time) the log of
# the numerator is a quadratic,
#
# $$-\frac12\left[\frac{(x_t-\sqrt{\alpha_t}\,x_{t-1})^2}{\beta_t} + \frac{(x_{t-1}-\sqrt{\bar\alpha_{t-1}}\,x_0)^2}{1-\bar\alpha_{t-1}}\right]
#  = -\frac12\left[\Big(\frac{\alpha_t}{\beta_t}+\frac{1}{1-\bar\alpha_{t-1}}\Big)x_{t-1}^2
#   - 2\Big(\frac{\sqrt{\alpha_t}}{\beta_t}x_t + \frac{\sqrt{\bar\alpha_{t-1}}}{1-\bar\alpha_{t-1}}x_0\Big)x_{t-1}\right] + \text{const},$$
#
# so x_{t−1} is Gaussian. Its precision is the factor of x_{t−1}²: using α_t(1−ᾱ_{t−1}) + β_t = 1 − ᾱ_t,
#
# $$\frac{1}{\tilde\beta_t} = \frac{\alpha_t}{\beta_t}+\frac{1}{1-\bar\alpha_{t-1}} = \frac{1-\bar\alpha_t}{\beta_t\,(1-\bar\alpha_{t-1})}
# \quad\Longrightarrow\quad \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t ,$$
#
# and its mean is β̃_t times the factor of x_{t−1}:
#
# $$q(x_{t-1} \mid x_t, x_0) = \mathcal N\big(\tilde\mu_t(x_t, x_0),\ \tilde\beta_t I\big), \qquad
# \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0 + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t .$$
#
# At t = 1 (ᾱ_0 = 1) this gives β̃_1 = 0 and μ̃_1 = x_0: the last step lands exactly on the clean image.
#
# Nothing here needs the two states to be neighbours: for any s < t, q(x_s | x_t, x_0) is the same
# Gaussian with α_t, β_t replaced by the α and β of the jump, ᾱ_t/ᾱ_s and 1 − ᾱ_t/ᾱ_s (section 7 uses that).
# The package computes (μ̃, β̃) in `ddpm_posterior(x_t, x0, t, t_prev, schedule)` for code indices
# t > t_prev ≥ −1 (t_prev = −1 is the clean image). Here t_prev = t − 1; first, the formula typed in by hand
# against the package:

# %%
schedule = make_schedule("linear", T=1000)
g = torch.Generator().manual_seed(0)
x0 = torch.rand(2, 1, 28, 28, generator=g) * 2 - 1
for t in [999, 500, 10, 0]:
    x_t = schedule.q_sample(x0, t, generator=g)
    ab, ab_prev = schedule.alpha_bar[t], schedule.alpha_bar_prev[t]
    alpha, beta = schedule.alphas[t], schedule.betas[t]
    mean_by_hand = (ab_prev.sqrt() * beta / (1 - ab)) * x0 + (alpha.sqrt() * (1 - ab_prev) / (1 - ab)) * x_t
    var_by_hand = float((1 - ab_prev) / (1 - ab) * beta)
    mean, var = ddpm_posterior(x_t, x0, t, t - 1, schedule)
    print(
        f"index {t:3d}: beta_tilde = {var:.3e} (by hand {var_by_hand:.3e}), "
        f"max |mean - by hand| = {(mean - mean_by_hand).abs().max():.1e}"
    )
    assert abs(var - var_by_hand) <= 1e-12 and torch.allclose(mean, mean_by_hand, atol=1e-5)
assert torch.equal(ddpm_posterior(x_t, x0, 0, -1, schedule)[0], x0)  # index 0 (t = 1): the mean is x_0

# %% [markdown]
# ### Does the chain agree?
#
# The formula can also be checked against the forward process itself, without any algebra. Fix a pixel
# value x_0, draw many x_{t−1} ~ q(x_{t−1} | x_0), take one forward step to x_t, and look at the pairs
# (x_{t−1}, x_t). They are jointly Gaussian, so E[x_{t−1} | x_t, x_0] is a straight line in x_t: a
# least-squares fit of x_{t−1} on x_t must find the slope √α_t (1−ᾱ_{t−1})/(1−ᾱ_t), the intercept
# √ᾱ_{t−1} β_t/(1−ᾱ_t) · x_0 and a residual variance β̃_t. (Code indices 10 and 500 below.)

# %%
# NBVAL_CHECK_OUTPUT
n_pairs = P.pick(quick=200_000, full=2_000_000)
pixel = 0.6  # one x_0 value
g = torch.Generator().manual_seed(1)
fits = {}
print(
    f"{'idx':>4} | {'slope':>8} {'fitted':>8} | {'intercept':>9} {'fitted':>8} | {'beta_tilde':>10} {'resid var':>10}"
)
for t in [10, 500]:
    x_prev = schedule.q_sample(torch.full((n_pairs, 1), pixel, dtype=torch.float64), t - 1, generator=g)
    x_t = schedule.q_step(x_prev, t, generator=g)
    slope = torch.cov(torch.stack([x_prev[:, 0], x_t[:, 0]]))[0, 1] / x_t.var()
    intercept = x_prev.mean() - slope * x_t.mean()
    resid_var = (x_prev - intercept - slope * x_t).var()
    # the package's μ̃ at x_t = 0 and x_t = 1 gives the line's intercept and slope
    line = ddpm_posterior(
        torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor(pixel), t, t - 1, schedule
    )[0]
    beta_tilde = ddpm_posterior(x_t[:1], torch.tensor(pixel), t, t - 1, schedule)[1]
    fits[t] = (
        float(slope),
        float(line[1] - line[0]),
        float(intercept),
        float(line[0]),
        float(resid_var),
        beta_tilde,
    )
    print(
        f"{t:4d} | {line[1] - line[0]:8.5f} {slope:8.5f} | {line[0]:9.5f} {intercept:8.5f} | "
        f"{beta_tilde:10.3e} {resid_var:10.3e}"
    )

# %% [markdown]
# With n pairs, a fitted slope is off by about σ_resid / (σ_{x_t} √n) and a variance by about
# var·√(2/n); the checks allow five of those.

# %%
for t, (slope, slope_theory, intercept, intercept_theory, resid_var, beta_tilde) in fits.items():
    sd_xt = (1 - schedule.alpha_bar[t].item()) ** 0.5
    se_slope = beta_tilde**0.5 / (sd_xt * n_pairs**0.5)
    assert abs(slope - slope_theory) < 5 * se_slope, (t, slope, slope_theory)
    assert (
        abs(intercept - intercept_theory)
        < 5 * se_slope * (1 + abs(pixel)) + 5 * (beta_tilde / n_pairs) ** 0.5
    )
    assert abs(resid_var / beta_tilde - 1) < 5 * (2 / n_pairs) ** 0.5, (t, resid_var, beta_tilde)
print("the chain's regression line and residual variance match (mu_tilde, beta_tilde)")

# %% [markdown]
# ### Exercise 1: the posterior mean
#
# Write `posterior_mean(x_t, x0, t, schedule)`: μ̃ for a batch `x_t`, `x0` (same shape) and one code index
# `t` in 0..T−1. Take α, β, ᾱ of the step from `schedule.alphas[t]`, `schedule.betas[t]`,
# `schedule.alpha_bar[t]`, and ᾱ of the state it goes to from `schedule.alpha_bar_prev[t]` (careful at
# index 0, the step to the clean image).


# %%
def posterior_mean(x_t, x0, t, schedule):
    """μ̃ = √ab_prev β/(1 − ab) · x0 + √α (1 − ab_prev)/(1 − ab) · x_t at code index t (ab = alpha_bar[t])."""
    # BEGIN SOLUTION
    ab, ab_prev = schedule.alpha_bar[t], schedule.alpha_bar_prev[t]
    alpha, beta = schedule.alphas[t], schedule.betas[t]
    return (ab_prev.sqrt() * beta / (1 - ab)) * x0 + (alpha.sqrt() * (1 - ab_prev) / (1 - ab)) * x_t
    # END SOLUTION


# %%
result = check_posterior_mean(posterior_mean)
assert result.passed, result  # solution-only
result

# %% [markdown]
# ## 2. From x_0 to ε: the step the sampler takes
#
# At sampling time x_0 is exactly what we do not know. The network predicts ε instead, and since
# x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, the clean image that ε explains is
#
# $$\hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\;\varepsilon_\theta(x_t, t)}{\sqrt{\bar\alpha_t}} .$$
#
# (A perfect network trained on the ε-MSE predicts E[ε | x_t], and then x̂_0 is E[x_0 | x_t]: the average
# of all the clean images that could have produced x_t, a blur early on that sharpens as t falls. A real
# network's error is magnified by √((1−ᾱ_t)/ᾱ_t) in x̂_0, about 160 at x_T, so its early x̂_0 are noisy and
# lie far outside [−1, 1].)
#
# ### Exercise 2: x̂_0 from ε
#
# Write `x0_from_eps(x_t, eps, t, schedule)` for a batch and one code index t.


# %%
def x0_from_eps(x_t, eps, t, schedule):
    """x̂_0 = (x_t − √(1 − ab) ε) / √ab with ab = alpha_bar[t] at code index t."""
    # BEGIN SOLUTION
    ab = schedule.alpha_bar[t]
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    # END SOLUTION


# %%
result = check_x0_from_eps(x0_from_eps)
assert result.passed, result  # solution-only
result

# %% [markdown]
# ### The mean in ε form
#
# Put x̂_0 into μ̃_t. Since √ᾱ_{t−1}/√ᾱ_t = 1/√α_t, the x_0 term becomes
# β_t/((1−ᾱ_t)√α_t) · x_t − β_t/(√α_t √(1−ᾱ_t)) · ε, and the two x_t terms add up to
# (β_t + α_t − ᾱ_t)/((1−ᾱ_t)√α_t) · x_t = x_t/√α_t. What is left is
#
# $$\mu_\theta(x_t, t) = \frac{1}{\sqrt{\alpha_t}}\left(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\varepsilon_\theta(x_t, t)\right),
# \qquad x_{t-1} = \mu_\theta(x_t, t) + \sigma_t z,\quad z \sim \mathcal N(0, I),$$
#
# with **no noise on the last step** (t = 1, code index 0, where the step lands on the clean image). Note
# the square root: one factor (1−ᾱ_t) from the posterior cancels against the √(1−ᾱ_t) of x̂_0 and leaves
# **√(1−ᾱ_t)** under β_t. Writing (1−ᾱ_t) there is the classic slip, and it is not a small one.
#
# Time for a trained model: the shipped `mnist-cond` (a class-conditional U-Net, labels 0…9), or your own
# from notebook 02's "Train your own" with `MODEL = "mine"`. We noise
# four real digits to code index 100, ask the model for ε, and compare three things: the package's step
# (`ddpm_step`, which goes through x̂_0 and μ̃), the ε form above typed in by hand, and the ε form with the slip.

# %%
MODEL = "mnist-cond"  # or "mine": your model from notebook 02
checkpoint = load_lesson_checkpoint(MODEL, device=P.device)
model, schedule = checkpoint.model, checkpoint.schedule  # the schedule the model was trained with
T = schedule.T
print(f"{checkpoint.info['name']}: {checkpoint.info['num_parameters']:,} parameters, {schedule.name} schedule, T = {T}")

images, digit_labels = load_mnist("heldout", device=P.device)
digits, digit_labels = images[:4], digit_labels[:4]
g = torch.Generator(device=P.device).manual_seed(2)
t = 100
x_t = schedule.q_sample(digits, t, generator=g)
with torch.no_grad():
    eps = model(x_t, torch.full((4,), t, device=P.device), labels=digit_labels)
z = torch.randn(x_t.shape, generator=g, device=P.device)

x_prev, x0_pred = ddpm_step(x_t, eps, t, t - 1, schedule, noise=z)
alpha, beta, ab = (float(v[t]) for v in (schedule.alphas, schedule.betas, schedule.alpha_bar))
sigma = float(schedule.posterior_variance[t]) ** 0.5
by_hand = (x_t - beta / (1 - ab) ** 0.5 * eps) / alpha**0.5 + sigma * z
slip = (x_t - beta / (1 - ab) * eps) / alpha**0.5 + sigma * z
print(f"index {t}: 1 - ab_t = {1 - ab:.4f}, sqrt(1 - ab_t) = {(1 - ab) ** 0.5:.4f}, sigma_t = {sigma:.4f}")
print(f"max |package - eps form|         = {(x_prev - by_hand).abs().max():.1e}")
print(f"max |package - eps form, 1 - ab| = {(x_prev - slip).abs().max():.3f}   (the slip)")
print(f"max |x0_pred - predict_x0|       = {(x0_pred - predict_x0(x_t, eps, ab)).abs().max():.1e}")
assert torch.allclose(x_prev, by_hand, atol=1e-5) and (x_prev - slip).abs().max() > 1e-3

# %% [markdown]
# Since 1 − ᾱ_t < √(1 − ᾱ_t), the slip removes **too much** of the predicted noise. Per unit of ε the
# excess, β_t (1/(1−ᾱ_t) − 1/√(1−ᾱ_t))/√α_t, is tiny at large t and grows towards the end of sampling, where
# the fine detail is made, until it is many times the noise σ_t that the step adds (more than 5 times from
# code index 10 down, asserted):

# %%
excess_over_sigma = {}
for t_ in [500, 100, 10, 1]:
    alpha_, beta_, ab_ = (float(v[t_]) for v in (schedule.alphas, schedule.betas, schedule.alpha_bar))
    excess = beta_ * (1 / (1 - ab_) - 1 / (1 - ab_) ** 0.5) / alpha_**0.5
    sigma_ = float(schedule.posterior_variance[t_]) ** 0.5
    excess_over_sigma[t_] = excess / sigma_
    print(
        f"index {t_:3d}: excess per unit of eps = {excess:.4f}, sigma_t = {sigma_:.4f}, ratio {excess / sigma_:.3g}"
    )
ratios = list(excess_over_sigma.values())
assert ratios == sorted(ratios) and ratios[0] < 0.01  # grows as t falls, from tiny at index 500
assert excess_over_sigma[10] > 5 and excess_over_sigma[1] > 5

# %% [markdown]
# ### Exercise 3: the reverse step
#
# Write `ddpm_reverse_step(x_t, eps, t, noise, schedule)` for a code index t: x_{t−1} = μ_θ + σ_t z with
# **σ_t² = β̃_t** and z = `noise`. At index 0 (the step to the clean image) no noise may be added: with
# `schedule.alpha_bar_prev[0]` = 1 you get β̃ = 0 there for free.


# %%
def ddpm_reverse_step(x_t, eps, t, noise, schedule):
    """(x_t − β/√(1−ab) ε)/√α + √β̃ z, β̃ = (1−ab_prev)/(1−ab) β at code index t (ab = alpha_bar[t])."""
    # BEGIN SOLUTION
    ab, ab_prev = schedule.alpha_bar[t], schedule.alpha_bar_prev[t]
    alpha, beta = schedule.alphas[t], schedule.betas[t]
    mean = (x_t - beta / (1 - ab).sqrt() * eps) / alpha.sqrt()
    beta_tilde = (1 - ab_prev) / (1 - ab) * beta
    return mean + beta_tilde.sqrt() * noise
    # END SOLUTION


# %%
result = check_ddpm_step(ddpm_reverse_step)
assert result.passed, result  # solution-only
result

# %% [markdown]
# ## 3. How much noise per step: σ_t² = β_t or β̃_t?
#
# The reverse step is μ_θ + σ_t z, but which σ_t? The model was trained on the mean only, so σ_t is a choice.
# Ho et al. (2020, Sec. 3.2) tried the two natural ones and found similar samples:
#
# * **σ_t² = β̃_t** (`variance="beta_tilde"`, the default): the posterior variance. It is the *exact* reverse
#   variance when the data is a **single point**: then x_0 is known and q(x_{t−1} | x_t) = q(x_{t−1} | x_t, x_0).
# * **σ_t² = β_t** (`variance="beta"`): the *exact* reverse variance when the data is **N(0, I)**. Then every
#   x_t is N(0, I) too, x_{t−1} and x_t have covariance √α_t, and Var(x_{t−1} | x_t) = 1 − α_t = β_t.
#
# Ho et al. call them the two extreme choices, the upper and lower bounds on the reverse process's entropy for
# data with unit variance per coordinate. The regression of section 1 shows both:
# with x_0 fixed the residual variance was β̃_t; with x_0 ~ N(0, 1) it is β_t.

# %%
# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(3)
print(
    f"{'idx':>4} | {'beta':>9} {'resid var, x0 ~ N(0,1)':>22} | {'beta_tilde':>10} {'resid var, x0 fixed':>19}"
)
for t in [10, 500]:
    x0_gauss = torch.randn(n_pairs, 1, generator=g, dtype=torch.float64)
    x_prev = schedule.q_sample(x0_gauss, t - 1, generator=g)
    x_t = schedule.q_step(x_prev, t, generator=g)
    slope = torch.cov(torch.stack([x_prev[:, 0], x_t[:, 0]]))[0, 1] / x_t.var()
    resid_gauss = float((x_prev - x_prev.mean() - slope * (x_t - x_t.mean())).var())
    beta = float(schedule.betas[t])
    print(f"{t:4d} | {beta:9.3e} {resid_gauss:22.3e} | {fits[t][5]:10.3e} {fits[t][4]:19.3e}")
    assert abs(resid_gauss / beta - 1) < 5 * (2 / n_pairs) ** 0.5

# %% [markdown]
# The two differ only where ᾱ_{t−1} is still close to 1, i.e. in the last steps of sampling (small t):
# β̃_t/β_t = (1−ᾱ_{t−1})/(1−ᾱ_t) is 0 at t = 1 and approaches 1 as t grows (for this schedule, within 1 %
# of 1 over the first 80 % of the sampling steps, asserted).

# %%
ratio = schedule.posterior_variance / schedule.betas
within_1_percent = int((ratio < 0.99).nonzero().max()) + 1
print(
    f"beta_tilde / beta: {ratio[0]:.2f} at index 0, {ratio[1]:.2f} at index 1, {ratio[10]:.2f} at index 10; ",
    end="",
)
print(f"within 1 % of 1 from index {within_1_percent} on")
assert ratio[0] == 0 and within_1_percent < 0.2 * T
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
steps = torch.arange(T)
axes[0].semilogy(steps[1:], schedule.betas[1:], label="β_t")
axes[0].semilogy(steps[1:], schedule.posterior_variance[1:], "--", label="β̃_t")
axes[0].set_xlabel("code index t")
axes[0].set_title("the two choices of σ_t²")
axes[0].legend()
axes[1].plot(steps[:200], ratio[:200])
axes[1].set_xlabel("code index t")
axes[1].set_title("β̃_t / β_t for code indices < 200")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Sampling: 1000 steps from noise to digits
#
# The whole sampler is the step of exercise 3 in a loop: draw x_T ~ N(0, I) (code index T−1), then for the
# code indices T−1, …, 0 ask the model for ε and step. `ddpm_sample` does exactly that (one `ddpm_step` per
# index) and, with `return_trajectory=True`, records every x_t and every x̂_0 on the way. The labels run
# 0, 1, 2, … in turn.

# %%
n_images = P.pick(quick=4, full=64)
labels = torch.arange(n_images, device=P.device) % 10
g = torch.Generator(device=P.device).manual_seed(4)
x_T = torch.randn(n_images, 1, 28, 28, generator=g, device=P.device)


def synchronize():
    if P.device.type == "cuda":
        torch.cuda.synchronize()


synchronize()
start = time.perf_counter()
samples, trajectory = ddpm_sample(
    model, x_T, schedule, labels=labels, generator=g, return_trajectory=True, progress=True
)
synchronize()
sampling_seconds = time.perf_counter() - start
print(f"{len(trajectory)} steps for {n_images} images in {sampling_seconds:.1f} s")
viz.show_images(
    samples, nrow=min(n_images, 8), labels=[f"label {y}" for y in labels.tolist()], title="DDPM, 1000 steps"
)

# %%
assert len(trajectory) == T and torch.isfinite(samples).all()
assert trajectory.timesteps[0] == T - 1 and trajectory.timesteps[-1] == 0
assert torch.equal(trajectory.xs[-1], samples) and torch.equal(
    trajectory.x0_preds[-1], samples
)  # last step: x̂_0
print(f"sample pixel range [{samples.min():.2f}, {samples.max():.2f}], mean {samples.mean():.2f}")

# %% [markdown]
# ## 5. Watching it happen: x_t next to x̂_0
#
# The recorded trajectory shows what each step "believes". On the left the state x_t, on the right the clean
# image x̂_0 predicted from it. In these pictures x̂_0 shows the digit's shape long before the noise has left
# x_t; the late steps mostly refine strokes. (Pictures are clipped to [−1, 1]; early x̂_0 values are far
# outside.)

# %%
frames, titles = trajectory_frames(trajectory, frames=8, max_images=4, nrow=2)
viz.animate(frames, titles=titles, nrow=1, interval=500)

# %% [markdown]
# The same as a slider: move through all 1000 recorded steps (the last position is the output).

# %%
# NBVAL_IGNORE_OUTPUT
app = widgets.trajectory_app(trajectory, step=T // 2, max_images=8, schedule=schedule)
app

# %% [markdown]
# ## 6. Why 1000 steps are slow
#
# Each step is one full forward pass of the U-Net, and the steps cannot run in parallel: step t needs the
# result of step t+1. So the cost is (number of steps) × (one forward pass). Let us measure one forward pass
# on this device and extrapolate.

# %%
# NBVAL_IGNORE_OUTPUT
t_batch = torch.full((n_images,), 500, device=P.device)
with torch.no_grad():
    model(x_T, t_batch, labels=labels)  # warm-up
    synchronize()
    repeats = 10
    start = time.perf_counter()
    for _ in range(repeats):
        model(x_T, t_batch, labels=labels)
    synchronize()
forward_ms = (time.perf_counter() - start) / repeats * 1000
step_ms = sampling_seconds / len(trajectory) * 1000
print(
    f"device {P.device}, batch of {n_images}: one forward pass {forward_ms:.1f} ms, one sampler step {step_ms:.1f} ms"
)
per_image_step_ms = step_ms / n_images
for n, what in [(64, "a grid of 64 digits"), (10_000, "10,000 digits (a common sample size for FID)")]:
    minutes = per_image_step_ms * n * T / 1000 / 60
    print(f"  {what}: about {minutes:,.1f} min at 1000 steps, {minutes / 20:,.1f} min at 50 steps")
print("(assuming time grows in proportion to the batch, which holds roughly on a CPU; a GPU batches better)")

# %% [markdown]
# That is the motivation for the rest of the course: the model is fixed, so the only way to sample faster
# is to take **fewer, bigger steps**.
#
# ## 7. Bigger steps with the same update
#
# DDPM's update allows that as it stands. Section 1 never used that the two states are neighbours: for any
# jump from t to an earlier s, q(x_s | x_t, x_0) is the same Gaussian with the α and β of the jump,
# α = ᾱ_t/ᾱ_s and β = 1 − ᾱ_t/ᾱ_s, and β̃ = (1−ᾱ_s)/(1−ᾱ_t) · β. So `ddpm_step(x_t, eps, t, s, schedule)`
# takes any earlier code index s, and `ddpm_sample` runs on any decreasing grid of code indices. Here are the
# starting noises of section 4 again, on a grid of 50 steps (`timestep_grid(T, 50)`, the "trailing" grid
# that notebook 06 discusses), with σ² = β̃ of each jump: 20 times fewer network evaluations.

# %%
grid_50 = timestep_grid(T, 50)
print(f"grid: {grid_50[:4].tolist()} ... {grid_50[-3:].tolist()}, then the clean image")

evaluations = 0


def counted_model(x, t, labels=None):
    global evaluations
    evaluations += 1
    return model(x, t, labels=labels)


with torch.no_grad():
    samples_50 = ddpm_sample(
        counted_model,
        x_T,
        schedule,
        grid_50,
        labels=labels,
        generator=torch.Generator(device=P.device).manual_seed(5),
    )
print(f"{evaluations} network evaluations")
shown = min(n_images, 8)
viz.show_images(
    torch.cat([samples[:shown], samples_50[:shown]]),
    nrow=shown,
    labels=[f"1000 steps, {y}" for y in labels[:shown].tolist()]
    + [f"50 steps, {y}" for y in labels[:shown].tolist()],
    title="DDPM (σ² = β̃) from the same x_T: all 1000 steps (top), 50 strided steps (bottom)",
)

# %%
# one strided step by hand: the posterior of the jump t -> s, with the α and β of the jump
t, s = int(grid_50[0]), int(grid_50[1])
ab_t, ab_s = float(schedule.alpha_bar[t]), float(schedule.alpha_bar[s])
alpha_jump, beta_jump = ab_t / ab_s, 1 - ab_t / ab_s
with torch.no_grad():
    eps = model(x_T, torch.full((n_images,), t, device=P.device), labels=labels)
z = torch.randn(x_T.shape, generator=torch.Generator(device=P.device).manual_seed(6), device=P.device)
x0_hat = (x_T - (1 - ab_t) ** 0.5 * eps) / ab_t**0.5
mean = (ab_s**0.5 * beta_jump / (1 - ab_t)) * x0_hat + (alpha_jump**0.5 * (1 - ab_s) / (1 - ab_t)) * x_T
by_hand = mean + ((1 - ab_s) / (1 - ab_t) * beta_jump) ** 0.5 * z
x_s, _ = ddpm_step(x_T, eps, t, s, schedule, noise=z)
print(
    f"index {t} -> {s}: max |ddpm_step - posterior of the jump by hand| = {(x_s - by_hand).abs().max():.1e}"
)

# %%
assert evaluations == 50 and torch.isfinite(samples_50).all()
assert torch.allclose(x_s, by_hand, atol=1e-5)

# %% [markdown]
# Strided DDPM runs, and in this run (pictures above) it gives digits from 50 steps. It is not the end of the
# story, though. The DDIM paper (Song et al. 2021, Table 1, CIFAR-10 FID) ran exactly this sampler on
# strided grids (its rows η = 1, σ² = β̃ of the jump, and σ̂, σ² = β of the jump) and found that it needs
# many more steps than the deterministic sampler of the next notebook for the same quality: at 10 steps,
# FID 41.07 (η = 1) and 367.43 (σ̂) against 13.36 for η = 0; at 1000 steps all are close (4.73, 3.17, 4.04).
# Notebook 04 derives that deterministic sampler from the same trained model and shows the shipped model's
# own reference table, where, at the sizes measured, that gap does not appear.
#
# ## Summary
#
# * Bayes' rule gives the reverse step given x_0: q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) with
#   μ̃_t = √ᾱ_{t−1} β_t/(1−ᾱ_t) x_0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) x_t and β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t;
#   we checked it against the package and against a regression on the forward chain.
# * The network's ε gives x̂_0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t, and with it μ = (x_t − β_t/√(1−ᾱ_t) ε)/√α_t.
# * σ_t² = β̃_t (exact for a single data point) and σ_t² = β_t (exact for N(0, I) data) are the two extremes
#   Ho et al. name; for this schedule they differ by more than 1 % only in the last steps. The step to the
#   clean image adds no noise.
# * Run on all T = 1000 steps, DDPM costs 1000 network evaluations per sample. The same update, with the α
#   and β of the jump, also runs on a strided grid (50 steps here); on CIFAR-10 (DDIM's Table 1) it then
#   needs more steps than deterministic DDIM for the same quality.
#
# **Next**: DDIM: the same model, a non-Markovian forward process with the same marginals, and big steps.
