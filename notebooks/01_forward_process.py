# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The forward process: turning data into noise
#
# A generative model has to turn something easy to sample (Gaussian noise) into something hard (a
# handwritten digit). Diffusion models split that impossible jump into a thousand small, learnable ones by
# looking at the opposite direction first: **destroying data is easy**. Add a little Gaussian noise, then a
# little more, and after enough steps any image becomes indistinguishable from pure noise. This noising
# chain is the *forward process*. It has no parameters and nothing to learn, yet it fixes everything the
# model will later learn to undo.
#
# This course builds the whole pipeline on MNIST, on a laptop CPU: the forward process (this notebook), a
# network trained to predict the noise, DDPM sampling, the DDIM derivation, the η knob, skipping steps,
# classifier-free guidance, fast solvers and inversion. Every notebook uses the tested package
# `diffusion_course`; the exercises ask you to write the key lines yourself and check them automatically.
#
# **In this notebook**: the one-step chain q(x_t | x_{t−1}), the closed-form jump q(x_t | x_0) and a
# numerical check that they agree, noise schedules and the signal-to-noise ratio, the "terminal SNR"
# problem, and three exercises.

# %% [markdown]
# > **Conventions (the same in every notebook).** Formulas use the paper's time: $x_0$ is the clean image and
# > $x_t$, $t = 1, \dots, T$, is the state after $t$ noising steps. Code uses an index `t` ∈ {0, …, T−1} that is
# > the paper's $t-1$: `alpha_bar[t]` $=\prod_{s \le t}(1-\beta_s)$ is the paper's $\bar\alpha_{t+1}$, the
# > pure-noise start $x_T$ sits at index T−1, and a sampler's last step goes from its smallest index to the
# > clean image ($\bar\alpha = 1$). "$x_0$" always means the clean image, never the state at index 0. Images are
# > in [−1, 1], shape (B, C, H, W). Every quality number is printed with its 95 % interval, and a ranking is
# > stated only where the intervals separate.

# %%
import matplotlib.pyplot as plt
import torch

from diffusion_course import get_profile, make_schedule, viz, widgets
from diffusion_course.data import load_mnist
from diffusion_course.exercises import check_alpha_bar, check_q_sample, check_snr
from diffusion_course.schedules import SCHEDULES

P = get_profile()
print(P)

# %% [markdown]
# ## 1. One step at a time: the forward chain
#
# A schedule is a list of noise variances $\beta_1, \dots, \beta_T$, one per step (T = 1000 here).
# Step t, for **t = 1, …, T**, shrinks the image a little and adds a little noise:
#
# $$q(x_t \mid x_{t-1}) = \mathcal N\big(\sqrt{\alpha_t}\,x_{t-1},\ \beta_t I\big), \qquad \alpha_t = 1-\beta_t,$$
#
# i.e. $x_t = \sqrt{\alpha_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon_t$ with fresh $\varepsilon_t \sim \mathcal N(0, I)$.
# The shrink factor $\sqrt{\alpha_t}$ is what keeps the variance bounded: if $x_{t-1}$ has unit variance,
# so does $x_t$ ($\alpha_t + \beta_t = 1$).
#
# **In code** (the box above) the schedule is a `NoiseSchedule` whose tensors have length T and are read at
# the code index: `betas[0]` is $\beta_1$ (the first step, applied to the clean image), `betas[T-1]` is
# $\beta_T$. So the state at code index 0 is $x_1$ and already carries one step of noise; the clean image
# $x_0$ has no index. `linear_schedule` is the one of Ho et al. (2020): β rising linearly from
# $\beta_1 = 10^{-4}$ to $\beta_T = 0.02$.

# %%
schedule = make_schedule("linear", T=1000)
print(schedule)
print(f"betas[0] (beta_1) = {schedule.betas[0]:.4g}, betas[T-1] (beta_T) = {schedule.betas[-1]:.4g}")
print(f"alphas[0] (alpha_1) = {schedule.alphas[0]:.6f}")

# %% [markdown]
# ## 2. Jumping straight to step t
#
# Two Gaussian steps merge into one Gaussian step. Starting from $x_{t-2}$ (t ≥ 2):
#
# $$x_t = \sqrt{\alpha_t}\big(\sqrt{\alpha_{t-1}}\,x_{t-2} + \sqrt{\beta_{t-1}}\,\varepsilon_{t-1}\big) + \sqrt{\beta_t}\,\varepsilon_t
#       = \sqrt{\alpha_t\alpha_{t-1}}\;x_{t-2} + \text{noise of variance } \alpha_t(1-\alpha_{t-1}) + (1-\alpha_t) = 1-\alpha_t\alpha_{t-1}.$$
#
# Repeating this down to the data gives the **closed form** the whole course relies on:
#
# $$q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t)\,I\big), \qquad
#   \bar\alpha_t = \prod_{s=1}^{t} \alpha_s = \prod_{s=1}^{t} (1-\beta_s),$$
#
# so $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$ with a single $\varepsilon \sim \mathcal N(0, I)$:
# no loop over steps. Training draws a random t for each image and uses exactly this jump.
#
# ### Exercise 1: ᾱ from β
#
# Write `alpha_bar_from_betas(betas)`: given the β's (a 1-D tensor of length T, read at code indices
# 0, …, T−1) return the tensor `alpha_bar` with `alpha_bar[i]` $=\prod_{s=0}^{i}$ (1 − `betas[s]`), the
# paper's $\bar\alpha_{i+1}$, for every code index i (same shape and dtype). One line of torch is enough.


# %%
def alpha_bar_from_betas(betas):
    """alpha_bar[i] = ∏_{s ≤ i} (1 − betas[s]) for every code index i = 0..T−1 (the paper's ᾱ_{i+1})."""
    # BEGIN SOLUTION
    return torch.cumprod(1 - betas, dim=0)
    # END SOLUTION


# %%
result = check_alpha_bar(alpha_bar_from_betas)
assert result.passed, result  # solution-only
result

# %% [markdown]
# ### The chain and the jump agree
#
# Let's check the closed form numerically. Take four pixel values $x_0 \in \{-1, -0.5, 0.5, 1\}$, run the
# chain step by step to code index 500, i.e. the paper's $x_{501}$ (`q_chain(x0, 500)`: 501 calls of
# `q_step`), many times, and compare the mean and standard deviation of the result with
# $\sqrt{\bar\alpha_{501}}\,x_0$ and $\sqrt{1-\bar\alpha_{501}}$ (`alpha_bar[500]`), and with samples of the
# jump (`q_sample`).

# %%
# NBVAL_CHECK_OUTPUT
n_samples = P.pick(quick=20_000, full=200_000)
t_check = 500
x0_values = torch.tensor([-1.0, -0.5, 0.5, 1.0])
x0 = x0_values.reshape(1, 1, 1, 4).expand(n_samples, 1, 1, 4).contiguous()

generator = torch.Generator().manual_seed(0)
chain = schedule.q_chain(x0, t_check, generator=generator).reshape(n_samples, 4)
jump = schedule.q_sample(x0, t_check, generator=generator).reshape(n_samples, 4)

alpha_bar_t = schedule.alpha_bar[t_check].item()
signal, noise_std = alpha_bar_t**0.5, (1 - alpha_bar_t) ** 0.5
print(f"code index {t_check}: sqrt(alpha_bar) = {signal:.4f}, sqrt(1 - alpha_bar) = {noise_std:.4f}")
print(
    f"{'x0':>5} | {'theory mean':>11} {'chain mean':>10} {'jump mean':>9} | {'chain std':>9} {'jump std':>8}"
)
for i, value in enumerate(x0_values.tolist()):
    print(
        f"{value:5.1f} | {signal * value:11.4f} {chain[:, i].mean():10.4f} {jump[:, i].mean():9.4f} | "
        f"{chain[:, i].std():9.4f} {jump[:, i].std():8.4f}"
    )

# %% [markdown]
# With $n$ samples the sample mean is off by about $\sigma/\sqrt n$; the check below allows five times that
# (and 3 % for the standard deviation, whose relative standard error is about $1/\sqrt{2n}$, 0.5 % at the quick profile's n).

# %%
standard_error = noise_std / n_samples**0.5
for samples in (chain, jump):
    assert torch.allclose(samples.mean(0), signal * x0_values, atol=5 * standard_error)
    assert torch.allclose(samples.std(0), torch.full((4,), noise_std), rtol=0.03)
print("chain and closed form agree within", f"{5 * standard_error:.4f}")

# %% [markdown]
# ## 3. A real digit, noised
#
# The images are MNIST digits scaled to [−1, 1] (background −1, ink +1). Here is one digit at the code
# indices t ∈ {0, 100, 250, 500, 750, 999} (the paper's $x_1, x_{101}, \dots, x_{1000} = x_T$; the pictures
# are labelled with the code index), with one noise draw ε shared by all six, so only ᾱ changes along the row.

# %%
images, labels = load_mnist("train")
digit = images[:1]
print(
    f"{len(images)} training images of shape {tuple(images.shape[1:])}, in [{images.min():.0f}, {images.max():.0f}]"
)

timesteps = torch.tensor([0, 100, 250, 500, 750, 999])
noise = torch.randn(digit.shape, generator=torch.Generator().manual_seed(1))
row = schedule.q_sample(digit.expand(6, -1, -1, -1), timesteps, noise.expand(6, -1, -1, -1))
viz.show_images(row, nrow=6, labels=[f"t={t}" for t in timesteps.tolist()], title="x_t, linear schedule")

# %% [markdown]
# At code index 999 ($x_T$) the picture looks like pure noise, and its pixel values look like draws from
# N(0, 1), which is where sampling will start. Compare the pixel histograms of x_t over 256 digits with the
# N(0, 1) density:

# %%
batch = images[:256]
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, t in zip(axes, [0, 250, 999]):
    x_t = schedule.q_sample(batch, t, generator=torch.Generator().manual_seed(2))
    viz.histogram_vs_normal(x_t, ax=ax, ymax=1.5)
    ax.set_title(f"code index t = {t}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise 2: write `q_sample`
#
# Write the jump yourself: `q_sample(x0, t, noise, schedule)` returns
# $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$ for a batch `x0` of shape (B, C, H, W),
# a LongTensor `t` of shape (B,) (one code index per image) and `noise` shaped like `x0`.
# Use `schedule.alpha_bar` (a float64 tensor of length T, read at the code index). Two things to watch: ᾱ
# must broadcast over each image, and the result should have `x0`'s dtype.


# %%
def q_sample(x0, t, noise, schedule):
    """√alpha_bar[t] · x0 + √(1 − alpha_bar[t]) · noise, with one code index t per batch element."""
    # BEGIN SOLUTION
    alpha_bar = schedule.alpha_bar[t].to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    # END SOLUTION


# %%
result = check_q_sample(q_sample)
assert result.passed, result  # solution-only
result

# %% [markdown]
# ## 4. Noise schedules and the signal-to-noise ratio
#
# The linear schedule is not the only choice. Nichol & Dhariwal (2021) proposed the **cosine** schedule,
# which destroys information more slowly in the middle of the chain and more evenly over t, and Stable
# Diffusion uses a **scaled-linear** one (√β
# linear, for a latent space rather than pixels). A schedule is best compared through
#
# $$\mathrm{SNR}(t) = \frac{\bar\alpha_t}{1-\bar\alpha_t},$$
#
# the variance of the signal part of $x_t$ over the variance of its noise part. It spans many orders of
# magnitude, so we plot it on a log scale. (The plots' horizontal axis is the code index.)
#
# ### Exercise 3: the SNR
#
# Write `snr(alpha_bar)`: ᾱ / (1 − ᾱ) for every entry of a tensor of ᾱ values.


# %%
def snr(alpha_bar):
    """SNR = ᾱ / (1 − ᾱ), entry by entry."""
    # BEGIN SOLUTION
    return alpha_bar / (1 - alpha_bar)
    # END SOLUTION


# %%
result = check_snr(snr)
assert result.passed, result  # solution-only
result

# %%
schedules = {name: make_schedule(name, T=1000) for name in SCHEDULES}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
viz.plot_schedules(schedules, ax=axes[0], quantity="alpha_bar")
viz.plot_schedules(schedules, ax=axes[1], quantity="snr")
axes[0].set_title("signal variance ᾱ")
axes[1].set_title("SNR, log scale")
for ax in axes:
    ax.set_xlabel("code index t")
fig.tight_layout()
plt.show()

# %% [markdown]
# The same digit under each schedule (one row per schedule, same noise): the cosine schedule keeps more
# of the digit in the middle of the chain, because its ᾱ is higher there (checked below). At code index 999
# all three rows look like noise, but they are not equally noisy: section 5 shows what is left.

# %%
six_digits, six_noises = digit.expand(6, -1, -1, -1), noise.expand(6, -1, -1, -1)
rows = torch.cat([s.q_sample(six_digits, timesteps, six_noises) for s in schedules.values()])
row_labels = [f"{name[:6]} t={t}" for name in schedules for t in timesteps.tolist()]
viz.show_images(rows, nrow=6, labels=row_labels, title="rows: " + ", ".join(schedules))
for t in timesteps[1:-1].tolist():
    ab = {name: float(s.alpha_bar[t]) for name, s in schedules.items()}
    print(f"alpha_bar[{t}]: " + ", ".join(f"{name} {v:.3f}" for name, v in ab.items()))
    assert ab["cosine"] > ab["linear"] and ab["cosine"] > ab["scaled_linear"]

# %% [markdown]
# ## 5. Is x_T really pure noise? The terminal SNR
#
# Sampling starts from pure noise, $x_T \sim \mathcal N(0, I)$ (code index T−1). But training only ever saw
# $x_T = \sqrt{\bar\alpha_T}\,x_0 + \sqrt{1-\bar\alpha_T}\,\varepsilon$, which still contains a little of
# the image whenever $\bar\alpha_T > 0$. Lin et al. (2023, "Common Diffusion Noise Schedules and Sample
# Steps are Flawed") tabulated how much signal the common schedules leave at the last step:

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'schedule':<14} {'sqrt(alpha_bar[T-1])':>22} {'SNR[T-1]':>10}")
for name, s in schedules.items():
    print(f"{name:<14} {s.terminal_signal():>22.2e} {s.snr[-1].item():>10.2e}")

# %%
assert abs(schedules["linear"].terminal_signal() - 0.0064) < 1e-4
assert abs(schedules["cosine"].terminal_signal() - 5e-5) < 2e-6
assert abs(schedules["scaled_linear"].terminal_signal() - 0.068) < 1e-3

# %% [markdown]
# Under the scaled-linear schedule $x_T$ still holds the image at 6.8 % of its amplitude, a leak the network
# learns to exploit (for example the image's mean brightness); at sampling time that information is missing,
# which Lin et al. identify as the reason Stable Diffusion struggles to make very dark or very bright images.
# The leak is easy to see: average many noise draws of $x_T$ for one digit, and whatever signal is left adds
# up while the noise averages away.
#
# Lin et al.'s fix shifts and scales $\sqrt{\bar\alpha_t}$ so that $\sqrt{\bar\alpha_T} = 0$ exactly while
# $\bar\alpha_1$ (`alpha_bar[0]`) stays unchanged (`rescale_zero_terminal_snr`).

# %%
n_draws = P.pick(quick=2000, full=10_000)
sd = schedules["scaled_linear"]
sd_zero = sd.rescale_zero_terminal_snr()
print(sd_zero, f"alpha_bar[0]: {sd.alpha_bar[0].item():.6f} -> {sd_zero.alpha_bar[0].item():.6f}")
assert torch.isclose(sd_zero.alpha_bar[0], sd.alpha_bar[0]) and sd_zero.alpha_bar[-1] == 0

g = torch.Generator().manual_seed(3)
draws = digit.expand(n_draws, -1, -1, -1)
averages = torch.cat([s.q_sample(draws, s.T - 1, generator=g).mean(0, keepdim=True) for s in (sd, sd_zero)])
averages = averages / averages.abs().amax(dim=(1, 2, 3), keepdim=True)  # stretch each to [−1, 1] to see it
viz.show_images(averages, labels=["scaled_linear", "zero SNR"], title=f"mean of {n_draws} draws of x_T")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
viz.plot_schedules({"scaled_linear": sd, "zero terminal SNR": sd_zero}, ax=axes[0], quantity="sqrt_alpha_bar")
axes[0].set_ylim(0, 0.2)
axes[0].set_xlim(700, 1000)
axes[0].set_title("√ᾱ near the end (zoom)")
viz.plot_schedules({"scaled_linear": sd, "zero terminal SNR": sd_zero}, ax=axes[1], quantity="snr")
axes[1].set_title("SNR: the rescaled one reaches 0 at index T−1 (x_T)")
for ax in axes:
    ax.set_xlabel("code index t")
fig.tight_layout()
plt.show()

# %% [markdown]
# With zero terminal SNR, $x_T$ holds no signal at all. Then ε is trivial to predict there
# ($\varepsilon = x_T$) but useless: the clean image it implies,
# $\hat x_0 = (x_T - \sqrt{1-\bar\alpha_T}\,\varepsilon)/\sqrt{\bar\alpha_T}$, divides by 0. That is why
# Lin et al. pair the rescaled schedule with v-prediction, and with "trailing" timesteps so that sampling
# really starts at $x_T$.
# We will meet timestep spacing again in the notebook on skipping steps.
#
# ## 6. Play with it
#
# Move the code index t and switch schedules. The noise draw is fixed, so only ᾱ changes as you move the
# slider; watch
# the histogram of pixel values turn from the digit's two spikes (−1 background, +1 ink) into N(0, 1).

# %%
# NBVAL_IGNORE_OUTPUT
app = widgets.forward_process_app(digit[0], "linear", t=250)
app

# %% [markdown]
# ## Summary
#
# * The forward chain adds a little Gaussian noise per step: $x_t = \sqrt{\alpha_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon_t$.
# * It collapses into one jump, $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$ with
#   $\bar\alpha_t = \prod_{s=1}^{t}(1-\beta_s)$ (in code `alpha_bar[t-1]`), which matched the chain at
#   code index 500 within five standard errors.
# * A schedule is best read through SNR(t) = ᾱ_t / (1 − ᾱ_t); linear, cosine and scaled-linear differ in how
#   fast they destroy signal (the cosine keeps the most in the middle) and in how much they leave in $x_T$.
# * Common schedules leak signal into $x_T$ (scaled-linear: 6.8 % of the amplitude); rescaling to zero
#   terminal SNR removes the leak, at the price of an $x_T$ from which ε cannot give $\hat x_0$.
#
# **Next**: a network that looks at x_t and t and predicts the noise ε that was added; that is all a
# diffusion model learns.
