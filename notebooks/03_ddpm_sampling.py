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
# noise, x_{T−1} ~ N(0, I), and walk the chain backwards, t = T−1, T−2, …, 0, removing a little noise at
# each step until a clean image is left.
#
# Each backward step needs the distribution of the previous state, q(x_{t−1} | x_t). That one is hopeless:
# it depends on the whole data distribution. But **given the clean image x_0** it is a Gaussian we can write
# down exactly, and the network tells us what x_0 probably is. This is the DDPM sampler of Ho et al. (2020).
#
# **In this notebook**: the reverse step from Bayes' rule and a numerical check of it; the step written
# with ε; the two choices of the step's noise, β_t and β̃_t, and what they mean; 1000-step sampling on the
# trained model, with x_t and the predicted x̂_0 side by side along the way; why 1000 steps are slow; and
# three exercises.

# %%
import time

import matplotlib.pyplot as plt
import torch

from diffusion_course import get_profile, make_schedule, viz, widgets
from diffusion_course.checkpoints import load_checkpoint
from diffusion_course.data import load_mnist
from diffusion_course.exercises.ddpm import check_ddpm_step, check_posterior_mean, check_x0_from_eps
from diffusion_course.sampling import ddpm_posterior, ddpm_sample, ddpm_step, predict_x0
from diffusion_course.widgets.trajectory import trajectory_frames

P = get_profile()
print(P)

# %% [markdown]
# ## 1. The reverse step, from Bayes' rule
#
# Notation as in notebook 01: t ∈ {0, …, T−1}, α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s, and x_0 is the clean image.
# The step from t = 0 lands on the clean image, so there we set **ᾱ_{−1} = 1**
# (`schedule.alpha_bar_prev[t]` holds ᾱ_{t−1} with that convention).
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
# At t = 0 (ᾱ_{−1} = 1) this gives β̃_0 = 0 and μ̃_0 = x_0: the last step lands exactly on the clean image.
#
# The package computes (μ̃, β̃) in `ddpm_posterior(x_t, x0, t, t_prev, schedule)` (with t_prev = t − 1
# here; notebook 06 uses other t_prev). First, the formula typed in by hand against the package:

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
        f"t = {t:3d}: beta_tilde = {var:.3e} (by hand {var_by_hand:.3e}), "
        f"max |mean - by hand| = {(mean - mean_by_hand).abs().max():.1e}"
    )
    assert abs(var - var_by_hand) <= 1e-12 and torch.allclose(mean, mean_by_hand, atol=1e-5)
assert torch.equal(ddpm_posterior(x_t, x0, 0, -1, schedule)[0], x0)  # t = 0: the mean is x_0 itself

# %% [markdown]
# ### Does the chain agree?
#
# The formula can also be checked against the forward process itself, without any algebra. Fix a pixel
# value x_0, draw many x_{t−1} ~ q(x_{t−1} | x_0), take one forward step to x_t, and look at the pairs
# (x_{t−1}, x_t). They are jointly Gaussian, so E[x_{t−1} | x_t, x_0] is a straight line in x_t: a
# least-squares fit of x_{t−1} on x_t must find the slope √α_t (1−ᾱ_{t−1})/(1−ᾱ_t), the intercept
# √ᾱ_{t−1} β_t/(1−ᾱ_t) · x_0 and a residual variance β̃_t.

# %%
# NBVAL_CHECK_OUTPUT
n_pairs = P.pick(quick=200_000, full=2_000_000)
pixel = 0.6  # one x_0 value
g = torch.Generator().manual_seed(1)
fits = {}
print(
    f"{'t':>4} | {'slope':>8} {'fitted':>8} | {'intercept':>9} {'fitted':>8} | {'beta_tilde':>10} {'resid var':>10}"
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
# Write `posterior_mean(x_t, x0, t, schedule)`: μ̃_t for a batch `x_t`, `x0` (same shape) and one integer
# `t` in 0..T−1. Take α_t, β_t, ᾱ_t from `schedule.alphas`, `schedule.betas`, `schedule.alpha_bar`, and
# ᾱ_{t−1} from `schedule.alpha_bar_prev` (careful at t = 0).


# %%
def posterior_mean(x_t, x0, t, schedule):
    """μ̃_t = √ᾱ_{t−1} β_t/(1−ᾱ_t) · x0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) · x_t."""
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
# (A network trained on the ε-MSE predicts E[ε | x_t], so x̂_0 is E[x_0 | x_t]: the average of all the clean
# images that could have produced x_t. Early on it is a blur; it sharpens as t falls.)
#
# ### Exercise 2: x̂_0 from ε
#
# Write `x0_from_eps(x_t, eps, t, schedule)` for a batch and one integer t.


# %%
def x0_from_eps(x_t, eps, t, schedule):
    """x̂_0 = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t."""
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
# with **no noise on the last step** (t = 0, where the step lands on the clean image). Note the square root:
# one factor (1−ᾱ_t) from the posterior cancels against the √(1−ᾱ_t) of x̂_0 and leaves **√(1−ᾱ_t)**
# under β_t. Writing (1−ᾱ_t) there is the classic slip, and it is not a small one.
#
# Time for the trained model (notebook 02's `mnist-cond`: a class-conditional U-Net, labels 0…9). We noise
# four real digits to t = 100, ask the model for ε, and compare three things: the package's step
# (`ddpm_step`, which goes through x̂_0 and μ̃), the ε form above typed in by hand, and the ε form with the slip.

# %%
model, info = load_checkpoint("mnist-cond", device=P.device)
schedule = make_schedule(info["schedule"]["name"], info["schedule"]["T"])
T = schedule.T
print(f"{info['name']}: {info['num_parameters']:,} parameters, {schedule.name} schedule, T = {T}")

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
print(f"t = {t}: 1 - ab_t = {1 - ab:.4f}, sqrt(1 - ab_t) = {(1 - ab) ** 0.5:.4f}, sigma_t = {sigma:.4f}")
print(f"max |package - eps form|         = {(x_prev - by_hand).abs().max():.1e}")
print(f"max |package - eps form, 1 - ab| = {(x_prev - slip).abs().max():.3f}   (the slip)")
print(f"max |x0_pred - predict_x0|       = {(x0_pred - predict_x0(x_t, eps, ab)).abs().max():.1e}")
assert torch.allclose(x_prev, by_hand, atol=1e-5) and (x_prev - slip).abs().max() > 1e-3

# %% [markdown]
# Since 1 − ᾱ_t < √(1 − ᾱ_t), the slip removes **too much** of the predicted noise. Per unit of ε the
# excess, β_t (1/(1−ᾱ_t) − 1/√(1−ᾱ_t))/√α_t, is tiny at large t and grows towards the end of sampling, where
# the fine detail is made, until it is far larger than the noise σ_t that the step adds:

# %%
for t_ in [500, 100, 10, 1]:
    alpha_, beta_, ab_ = (float(v[t_]) for v in (schedule.alphas, schedule.betas, schedule.alpha_bar))
    excess = beta_ * (1 / (1 - ab_) - 1 / (1 - ab_) ** 0.5) / alpha_**0.5
    print(
        f"t = {t_:3d}: excess per unit of eps = {excess:.4f},  sigma_t = {schedule.posterior_variance[t_] ** 0.5:.4f}"
    )

# %% [markdown]
# ### Exercise 3: the reverse step
#
# Write `ddpm_reverse_step(x_t, eps, t, noise, schedule)`: x_{t−1} = μ_θ + σ_t z with **σ_t² = β̃_t** and
# z = `noise`. At t = 0 no noise may be added (with ᾱ_{−1} = 1 you get β̃_0 = 0 for free, if you take
# ᾱ_{t−1} from `schedule.alpha_bar_prev`).


# %%
def ddpm_reverse_step(x_t, eps, t, noise, schedule):
    """x_{t−1} = (x_t − β_t/√(1−ᾱ_t) · ε)/√α_t + √β̃_t · z, β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) · β_t."""
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
# data with unit variance per coordinate; real data lies in between. The regression of section 1 shows both:
# with x_0 fixed the residual variance was β̃_t; with x_0 ~ N(0, 1) it is β_t.

# %%
# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(3)
print(
    f"{'t':>4} | {'beta':>9} {'resid var, x0 ~ N(0,1)':>22} | {'beta_tilde':>10} {'resid var, x0 fixed':>19}"
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
# β̃_t/β_t = (1−ᾱ_{t−1})/(1−ᾱ_t) is 0 at t = 0 and approaches 1 as t grows.

# %%
ratio = schedule.posterior_variance / schedule.betas
within_1_percent = int((ratio < 0.99).nonzero().max()) + 1
print(
    f"beta_tilde / beta: {ratio[0]:.2f} at t = 0, {ratio[1]:.2f} at t = 1, {ratio[10]:.2f} at t = 10; ",
    end="",
)
print(f"within 1 % of 1 from t = {within_1_percent} on")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
steps = torch.arange(T)
axes[0].semilogy(steps[1:], schedule.betas[1:], label="β_t")
axes[0].semilogy(steps[1:], schedule.posterior_variance[1:], "--", label="β̃_t")
axes[0].set_xlabel("t")
axes[0].set_title("the two choices of σ_t²")
axes[0].legend()
axes[1].plot(steps[:200], ratio[:200])
axes[1].set_xlabel("t")
axes[1].set_title("β̃_t / β_t for t < 200")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Sampling: 1000 steps from noise to digits
#
# The whole sampler is the step of exercise 3 in a loop: draw x_{T−1} ~ N(0, I), then for t = T−1, …, 0
# ask the model for ε and step. `ddpm_sample` does exactly that (one `ddpm_step` per t) and, with
# `return_trajectory=True`, records every x_t and every x̂_0 on the way. The labels run 0, 1, 2, … in turn.

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
# image x̂_0 predicted from it. x̂_0 settles on the digit's shape long before the noise has left x_t; the
# late steps mostly refine strokes. (Pictures are clipped to [−1, 1]; early x̂_0 values are far outside.)

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
for n, what in [(64, "a grid of 64 digits"), (10_000, "10,000 digits (enough for a Fréchet distance)")]:
    minutes = per_image_step_ms * n * T / 1000 / 60
    print(f"  {what}: about {minutes:,.1f} min at 1000 steps, {minutes / 20:,.1f} min at 50 steps")
print("(assuming time grows in proportion to the batch, which holds roughly on a CPU; a GPU batches better)")

# %% [markdown]
# That is the motivation for the rest of the course: the model is fixed, so the only way to sample faster
# is to take **fewer, bigger steps**. DDPM cannot: its step was derived for going from t to t − 1. The next
# notebook derives DDIM, a family of samplers that use the *same* trained model and can jump from t to any
# earlier t'.
#
# ## Summary
#
# * Bayes' rule gives the reverse step given x_0: q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) with
#   μ̃_t = √ᾱ_{t−1} β_t/(1−ᾱ_t) x_0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) x_t and β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t;
#   we checked it against the package and against a regression on the forward chain.
# * The network's ε gives x̂_0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t, and with it μ = (x_t − β_t/√(1−ᾱ_t) ε)/√α_t.
# * σ_t² = β̃_t (exact for a single data point) and σ_t² = β_t (exact for N(0, I) data) bracket the truth;
#   they differ only in the last steps. The step to the clean image adds no noise.
# * DDPM takes T = 1000 network evaluations per sample: that is what makes it slow.
#
# **Next**: DDIM: the same model, a non-Markovian forward process with the same marginals, and big steps.
