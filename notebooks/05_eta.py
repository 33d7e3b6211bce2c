# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · η: how much fresh noise should a sampler add?
#
# Notebook 04 derived DDIM: one trained ε-model, many samplers. Every step t → t_prev of the family writes
# the next state as the model's guess of the clean image, plus the model's own noise estimate, plus
# (optionally) **fresh** noise:
#
# $$x_{\text{prev}} = \sqrt{\bar\alpha_{\text{prev}}}\;\hat x_0 \;+\; \sqrt{1-\bar\alpha_{\text{prev}}-\sigma_t^2}\;\hat\varepsilon \;+\; \sigma_t\, z,
# \qquad z \sim \mathcal N(0, I),\qquad \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon}{\sqrt{\bar\alpha_t}}.$$
#
# The noise part of $x_{\text{prev}}$ has a fixed budget, $1-\bar\alpha_{\text{prev}}$; σ_t decides how much of it
# is fresh randomness and how much is the model's remembered ε̂. DDIM puts a single knob on σ_t: **η**.
#
# **In this notebook**: the formula σ_t(η) and what η = 0 and η = 1 mean; the variance across runs, measured
# correctly (and the classic way to get it wrong); what η does to diversity and quality on our MNIST model;
# a slider to feel it; two exercises.

# %%
import matplotlib.pyplot as plt
import torch

from diffusion_course import get_profile, make_schedule, viz, widgets
from diffusion_course.checkpoints import load_checkpoint
from diffusion_course.data import load_mnist
from diffusion_course.exercises.eta import check_cross_run_variance, check_sigma_schedule
from diffusion_course.experiments import (
    cross_run_variance,
    ddim_sigmas,
    feature_spread,
    per_pixel_variance,
    runs_from_fixed_start,
)
from diffusion_course.metrics import classifier_features, frechet_distance, label_accuracy
from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture
from diffusion_course.sampling import ddim_sample, ddpm_sample, timesteps

P = get_profile()
print(P)

# %% [markdown]
# ## 1. The η family: σ_t(η)
#
# DDIM's Eq. 16 sets, for a step from $t$ to the next visited timestep $t_{\text{prev}}$ (with
# $\bar\alpha_{\text{prev}} = 1$ after the last one),
#
# $$\sigma_t(\eta) = \eta\,\sqrt{\frac{1-\bar\alpha_{\text{prev}}}{1-\bar\alpha_t}}\;\sqrt{1-\frac{\bar\alpha_t}{\bar\alpha_{\text{prev}}}}.$$
#
# * **η = 0**: σ = 0, no fresh noise at all. The sampler is a deterministic map x_T → x_0 (a discretised ODE):
#   the same x_T always gives the same image, bit for bit.
# * **η = 1**: σ² = (1−ᾱ_prev)/(1−ᾱ_t) · (1 − ᾱ_t/ᾱ_prev) = β̃, the variance of the DDPM posterior
#   q(x_prev | x_t, x_0) for the jump t → t_prev. So η = 1 *is* DDPM's ancestral sampler, on any grid.
# * In between, η interpolates: η² is the fraction of DDPM's fresh-noise variance that is kept. (η a little
#   above 1 is allowed while σ² still fits in the budget 1 − ᾱ_prev; the package says how far.)
#
# ### Exercise 1: σ along a sampling grid
#
# Write `sigma_schedule(schedule, ts, eta)`: given a descending grid of timesteps `ts` (a LongTensor, e.g.
# `timesteps(1000, 10)` = 999, 899, …, 99), return one σ per step (a float64 tensor of `len(ts)` values).
# The step from `ts[i]` goes to `ts[i+1]`, **not** to `ts[i] − 1`, and the last step goes to the clean data,
# where ᾱ_prev = 1. Use `schedule.alpha_bar` (float64).


# %%
def sigma_schedule(schedule, ts, eta):
    """σ_i = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev) for each step ts[i] → ts[i+1] (ᾱ_prev = 1 at the end)."""
    # BEGIN SOLUTION
    alpha_bar_t = schedule.alpha_bar[ts]
    alpha_bar_prev = torch.cat([schedule.alpha_bar[ts[1:]], torch.ones(1, dtype=alpha_bar_t.dtype)])
    return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t)).sqrt() * (1 - alpha_bar_t / alpha_bar_prev).sqrt()
    # END SOLUTION


# %%
result = check_sigma_schedule(sigma_schedule)
assert result.passed, result  # solution-only
result

# %% [markdown]
# The package's version is `experiments.ddim_sigmas` (it calls `sampling.ddim_sigma`, the function the
# sampler uses). Here is σ_t along a 20-step grid for several η, against the whole noise budget
# √(1 − ᾱ_prev), and the fraction of that budget that is fresh noise, σ²/(1 − ᾱ_prev):

# %%
schedule = make_schedule("linear", T=1000)
ts20 = timesteps(1000, 20)
etas = [0.0, 0.2, 0.5, 1.0]
budget = (1 - torch.cat([schedule.alpha_bar[ts20[1:]], torch.ones(1, dtype=torch.float64)])).sqrt()

fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for eta in etas:
    sigma = ddim_sigmas(schedule, ts20, eta)
    axes[0].plot(ts20, sigma, "o-", ms=3, label=f"η = {eta}")
    axes[1].plot(ts20[:-1], (sigma[:-1] / budget[:-1]) ** 2, "o-", ms=3, label=f"η = {eta}")
axes[0].plot(ts20, budget, "k--", lw=1, label="budget √(1−ᾱ_prev)")
axes[0].set_title("σ_t(η) on the 20-step trailing grid")
axes[1].set_title("fresh share of the noise budget, σ² / (1 − ᾱ_prev)")
for ax in axes:
    ax.set_xlabel("t (the sampler walks right to left)")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# σ itself shrinks towards the data, but as a share of the noise budget the fresh noise is large: at η = 1 on
# this 20-step grid, every step replaces 40–74 % of the noise variance with new noise (most at both ends). The
# share scales with η², so at η = 0.5 it is a quarter of that, and at η = 0 the noise part is the model's ε̂
# alone. On consecutive steps, η = 1 must give exactly DDPM's β̃_t (`schedule.posterior_variance`):

# %%
# NBVAL_CHECK_OUTPUT
all_steps = timesteps(1000, 1000)
sigma_full = ddim_sigmas(schedule, all_steps, 1.0)
beta_tilde = schedule.posterior_variance[all_steps]
worst = ((sigma_full[:-1] ** 2 - beta_tilde[:-1]).abs() / beta_tilde[:-1]).max().item()
print(f"max relative difference between σ²(η=1) and β̃ over 999 consecutive steps: {worst:.1e}")

# %%
assert worst < 1e-10
assert sigma_full[-1] == 0 and beta_tilde[-1] == 0  # the last step lands on the data

# %% [markdown]
# And not only the variances agree: with the same generator, DDIM with η = 1 and DDPM draw the same z's in the
# same order, so on any grid they produce the same samples. We check this on the course's 2-D Gaussian
# mixture, whose exact ε is known (the *oracle*), with a 50-step grid:

# %%
oracle = GaussianMixtureOracle(toy_mixture(), schedule)
x_T_2d = torch.randn(500, 2, generator=torch.Generator().manual_seed(12345))
ts50 = timesteps(1000, 50)
ddim_eta1 = ddim_sample(oracle, x_T_2d, schedule, ts50, eta=1.0, generator=torch.Generator().manual_seed(1))
ddpm_50 = ddpm_sample(oracle, x_T_2d, schedule, ts50, generator=torch.Generator().manual_seed(1))
print(f"max |DDIM(η=1) − DDPM| on 500 points: {(ddim_eta1 - ddpm_50).abs().max().item():.1e}")

# %%
assert torch.allclose(ddim_eta1, ddpm_50, atol=1e-5)

# %% [markdown]
# ## 2. The model
#
# From here on we sample MNIST digits with the course's shipped class-conditional U-Net (`mnist-cond`,
# trained on the bundled 4,500-digit subset with the linear schedule, T = 1000). Labels ask for a digit class;
# we do not use guidance here (that is a later notebook). To judge the samples we use the shipped digit
# classifier: its accuracy on the requested labels, and the Fréchet distance (FD) between its features on the
# samples and on the 500 held-out real digits.

# %%
model, info = load_checkpoint("mnist-cond", device=P.device)
schedule = make_schedule(info["schedule"]["name"], info["schedule"]["T"])
classifier, _ = load_checkpoint("mnist-classifier", device=P.device)
real_images, real_labels = load_mnist("heldout")
real_features = classifier_features(classifier, real_images)
print(f"model: {info['num_parameters']:,} parameters, trained {info['step']} steps; schedule {schedule}")
print(
    f"classifier accuracy on the held-out digits: {label_accuracy(classifier, real_images, real_labels):.3f}"
)

# %% [markdown]
# ## 3. Variance across runs, measured correctly
#
# "How random is the sampler?" has a precise meaning: **fix one starting point x_T**, run the sampler several
# times with different generators (different z draws, nothing else changes), and measure how much the results
# differ, pixel by pixel:
#
# $$V = \frac1P\sum_{p}\ \frac{1}{R-1}\sum_{r=1}^{R}\Big(x_0^{(r)}[p] - \overline{x_0[p]}\Big)^2 .$$
#
# With η = 0 nothing random is left, so V must be exactly 0, the runs bitwise identical. V grows with η.
# `runs_from_fixed_start(sample, x_T, seeds)` makes the R runs; `sample(x_T, generator)` is the sampler with
# everything else bound. We use `n_start` starting points (one label each), R runs each and DDIM with
# `steps` steps.
#
# One detail matters more than it seems: x_T gets **its own seed** (12345), not one of the runs' seeds. A run
# whose generator had x_T's seed would draw x_T itself as its first "fresh" z, so its first step would add the
# start to itself, x_prev ≈ (√(1−ᾱ_prev−σ²) + σ)·x_T: too much noise, which a stochastic sampler then carries
# all the way to the image. The package refuses that combination (`check_independent_start`).

# %%
n_start = P.pick(quick=24, full=64)
n_runs = P.pick(quick=3, full=8)
steps = P.pick(quick=10, full=50)
seeds = list(range(n_runs))
ts = timesteps(schedule.T, steps)

x_T = torch.randn(n_start, 1, 28, 28, generator=torch.Generator().manual_seed(12345)).to(P.device)
labels = (torch.arange(n_start) % 10).to(P.device)


def ddim_with(eta):
    """The sampler with everything but x_T and the generator bound."""
    return lambda x, g: ddim_sample(model, x, schedule, ts, eta=eta, generator=g, labels=labels)


runs = {}  # η → (R, n_start, 1, 28, 28), all from the same x_T
for eta in etas:
    runs[eta] = runs_from_fixed_start(ddim_with(eta), x_T, seeds).cpu()

# %%
# NBVAL_CHECK_OUTPUT
print(f"DDIM-{steps}, {n_start} starting points × {n_runs} runs each")
print(f"{'eta':>5} | {'variance across runs':>20} | runs bitwise identical")
variance = {}
for eta in etas:
    variance[eta] = per_pixel_variance(runs[eta]).mean().item()
    identical = all(torch.equal(runs[eta][0], r) for r in runs[eta][1:])
    print(f"{eta:>5.1f} | {variance[eta]:>20.5f} | {identical}")

# %%
assert variance[0.0] == 0.0 and all(torch.equal(runs[0.0][0], r) for r in runs[0.0])
assert variance[0.2] > 0 and variance[0.2] < variance[0.5] < variance[1.0]

# %% [markdown]
# Four runs from the same x_T, for three starting points: at η = 0 the four rows are one image repeated; at
# η = 1 each run makes its own version of the digit (the class stays, the handwriting changes). The right-hand
# panel is the per-pixel variance at η = 1, averaged over the starting points: the runs disagree along the
# strokes' edges, not in the background.

# %%
show = [0, 1, 2]
fig, axes = plt.subplots(1, 3, figsize=(12, 3.3), width_ratios=(1, 1, 0.55))
for ax, eta in zip(axes, [0.0, 1.0]):
    tiles = runs[eta][:, show].transpose(0, 1).flatten(0, 1)  # starting point by starting point
    viz.show_images(tiles, nrow=n_runs, ax=ax, title=f"η = {eta}: {n_runs} runs (columns) per x_T (rows)")
variance_map = per_pixel_variance(runs[1.0]).mean(0)[0]
image = axes[2].imshow(variance_map, cmap="magma")
axes[2].set_axis_off()
axes[2].set_title("η = 1: per-pixel variance")
fig.colorbar(image, ax=axes[2], fraction=0.046)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise 2: the cross-run variance
#
# Write `cross_run_variance(sample, x_T, seeds)`: run `sample(x_T, generator)` once per seed, each time with a
# new `torch.Generator().manual_seed(seed)` and **the same `x_T`**, stack the results (R, …), take the
# unbiased variance across the runs for every pixel and return its mean (a number). The checker runs it on
# DDIM samplers of the 2-D oracle.


# %%
def cross_run_variance_mine(sample, x_T, seeds):
    """Mean over pixels of the per-pixel variance across runs sample(x_T, Generator(seed)), x_T fixed."""
    # BEGIN SOLUTION
    runs = torch.stack([sample(x_T, torch.Generator().manual_seed(seed)) for seed in seeds])
    return runs.var(dim=0).mean()
    # END SOLUTION


# %%
result = check_cross_run_variance(cross_run_variance_mine)
assert result.passed, result  # solution-only
result

# %% [markdown]
# The package's `experiments.cross_run_variance` is the function the checker compares against. On the 2-D
# oracle, where a run costs nothing, it shows the same pattern as the model: exactly 0 at η = 0, then growing.

# %%
# NBVAL_CHECK_OUTPUT
oracle_variance = {
    eta: cross_run_variance(
        lambda x, g, eta=eta: ddim_sample(oracle, x, oracle.schedule, ts50, eta=eta, generator=g),
        x_T_2d,
        seeds=list(range(8)),
    )
    for eta in etas
}
print("oracle, DDIM-50:", ", ".join(f"η={eta}: {v:.4f}" for eta, v in oracle_variance.items()))

# %%
values = list(oracle_variance.values())
assert values[0] == 0.0 and all(a < b for a, b in zip(values, values[1:]))

# %% [markdown]
# ## 4. The classic mistake: a new x_T for every run
#
# A tempting way to "measure the randomness of η" is to call the sampler R times and compare the outputs, letting
# each call draw its own starting noise. Here it is, done at η = 0 and at η = 1:

# %%
n_mistake = P.pick(quick=8, full=64)


def mistaken_variance(eta):
    """WRONG: every run draws its own x_T, so the runs differ because they start from different noise."""
    outputs = []
    for seed in seeds:
        generator = torch.Generator(device=P.device).manual_seed(100 + seed)
        fresh_x_T = torch.randn(n_mistake, 1, 28, 28, generator=generator, device=P.device)  # ← the mistake
        outputs.append(
            ddim_sample(
                model, fresh_x_T, schedule, ts, eta=eta, generator=generator, labels=labels[:n_mistake]
            )
        )
    return per_pixel_variance(torch.stack(outputs).cpu()).mean().item()


mistaken = {eta: mistaken_variance(eta) for eta in (0.0, 1.0)}

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'eta':>5} | {'fixed x_T (correct)':>19} | {'new x_T per run (wrong)':>23}")
for eta in (0.0, 1.0):
    print(f"{eta:>5.1f} | {variance[eta]:>19.5f} | {mistaken[eta]:>23.5f}")

# %%
assert variance[0.0] == 0.0 < 0.05 < mistaken[0.0]  # η = 0 looks "random" when x_T is redrawn

# %% [markdown]
# The wrong measurement reports a large variance **at η = 0**, where the sampler has no randomness at all. What
# it measures is how different *digits of the same class* are: the spread of the model's whole distribution
# p(x_0 | label), which every η is supposed to reproduce (it says nothing about η). The x_T → x_0 map of DDIM
# η = 0 is deterministic, but x_T itself is random; redrawing it per run mixes that randomness into the number
# and hides the one thing η controls, the randomness *given* the start.
#
# Note also how close the two columns are at η = 1: DDPM's fresh noise makes the image almost independent of
# x_T, so runs from one x_T differ about as much as runs from different ones. The correct measurement moves
# from 0 (the image is a function of x_T) towards that level (x_T is forgotten) as η goes from 0 to 1.
#
# (Two more ways to fool yourself: reuse one generator seed for every run, which makes even η = 1 look
# deterministic, and compute the variance over the pixels of one image instead of across runs. The checker of
# Exercise 2 recognises all three.)
#
# ## 5. Diversity and quality as η moves
#
# η adds diversity *per starting point*. To see it in terms the classifier understands, we measure
#
# * **diversity**: the mean pairwise distance between the classifier features of the R runs from the same
#   x_T (`feature_spread`), averaged over the starting points (0 at η = 0);
# * **quality**: the FD between the classifier features of the samples and of the held-out digits (lower is
#   better), and the label accuracy (does a sample asked to be a 3 look like a 3?).
#
# The FD uses one run per starting point, i.e. `n_start` samples from distinct x_T's: at η = 0 the R runs are R
# copies of the same images, and a set with copies would be penalised as less diverse, which is not what we
# want to compare. With so few samples the FD is biased upwards (it needs thousands to settle), so we print
# the FD of as many real training digits (class-balanced) beside it, and compare rows with each other.

# %%
# NBVAL_CHECK_OUTPUT
train_images, _ = load_mnist("train")  # sorted by label: every k-th image is a class-balanced subset
real_subset = train_images[:: len(train_images) // n_start][:n_start]
fd_real = frechet_distance(classifier_features(classifier, real_subset), real_features)
print(f"DDIM-{steps}; FD of {n_start} real training digits: {fd_real:.1f}")
print(f"{'eta':>5} | {'feature spread':>14} | {'FD':>7} | {'label accuracy':>14}")
quality = {}
for eta in etas:
    samples = runs[eta].flatten(0, 1)  # run-major: sample r·n_start + b is run r from start b
    features = classifier_features(classifier, samples).view(n_runs, n_start, -1)
    spread = feature_spread(features)
    fd = frechet_distance(features[0], real_features)
    accuracy = label_accuracy(classifier, samples, labels.cpu().repeat(n_runs))
    quality[eta] = (spread, fd, accuracy)
    print(f"{eta:>5.1f} | {spread:>14.3f} | {fd:>7.1f} | {accuracy:>14.3f}")

# %%
spreads = [quality[eta][0] for eta in etas]
assert spreads[0] == 0.0 < spreads[1] < spreads[2] and spreads[1] < spreads[3]  # grows, then saturates

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for ax, k, title in zip(axes, range(3), ["diversity: feature spread (↑)", "FD (↓)", "label accuracy (↑)"]):
    ax.plot(etas, [quality[eta][k] for eta in etas], "o-")
    ax.set_xlabel("η")
    ax.set_title(title)
    ax.grid(alpha=0.3)
fig.suptitle(f"DDIM with {steps} steps: {n_start} starting points × {n_runs} runs per η")
fig.tight_layout()
plt.show()

# %% [markdown]
# Reading the curves: diversity per starting point grows steadily with η. Quality is less simple. DDIM's
# Table 1 (CIFAR-10) makes η = 0 the best with few steps (FID 13.4 at η = 0 vs 41.1 at η = 1 with 10 steps,
# closing to 4.04 vs 4.73 at 1000 steps): each stochastic step injects noise that the next, large step
# cannot fully remove. With the exact ε of the oracle, notebook 06 finds the same ordering. On our small MNIST
# model it does **not** hold: with a few dozen samples the FDs above differ by less than their own noise, and
# with 500 samples (`docs/benchmarks/sampling.md`) η = 0.5 has the lowest FD at 10, 20 and 50 steps while
# label accuracy rises with η. Fresh noise also washes out part of the *model's* error, which a deterministic
# sampler carries all the way to x_0; a model trained for 7,000 steps has plenty of error to wash out, the
# paper's (800,000 steps) much less. Which η is best is a property of the model, not of the sampler.
#
# Note what η does *not* change: the distribution the sampler targets. Over many x_T's, η = 0 is just as
# diverse; it simply ties each digit to its x_T, which is what makes DDIM inversion and interpolation possible.
#
# ## 6. Play with it
#
# Two runs (seeds 0 and 1) from the same six starting points with DDIM-10. At η = 0 the rows are identical and
# the difference row is black; move η up and watch the runs drift apart, stroke by stroke.

# %%
# NBVAL_IGNORE_OUTPUT
app = widgets.eta_app(model, schedule, x_T[:6], labels[:6], steps=10, eta=0.0)
app

# %% [markdown]
# ## Summary
#
# * DDIM's η sets the fresh noise of each step, σ_t(η) = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev): η = 0 is
#   deterministic, η = 1 is DDPM's ancestral sampler (σ² = β̃, the same samples for the same seed).
# * The randomness of a sampler is the variance across runs **from one fixed x_T**: exactly 0 at η = 0,
#   growing with η. Redrawing x_T per run measures the spread of the data distribution instead.
# * Larger η gives more diversity per starting point; with few steps it costs quality (FD up), which is why
#   fast samplers are deterministic.
#
# **Next**: skipping steps. Which timesteps should a 10-step sampler visit, how much quality does each
# step count cost, and how much time does it save?
