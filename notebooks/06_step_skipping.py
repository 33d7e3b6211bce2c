# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Skipping steps: which timesteps, how many, and what it costs
#
# The model was trained on T = 1000 noise levels, and DDPM's sampler walks all of them: 1000 network calls per
# image. DDIM's derivation (notebook 04) works for any decreasing subsequence of timesteps, and so does DDPM on
# the strided chain: a step from t to t_prev only needs ᾱ_t and ᾱ_prev. So a sampler with S steps visits S of
# the 1000 timesteps, and costs S network calls.
#
# Two questions follow: **which** S timesteps (the *strategy*), and **how many** (the quality/time trade-off,
# which also depends on η). This notebook measures both on the 2-D oracle, where ε is exact, and on our MNIST
# model, and reproduces the shape of DDIM's Table 1.
#
# **In this notebook**: five timestep strategies and the one that misses T−1; the η × steps table on the
# model (FD) and on the oracle (sliced W2), beside the paper's CIFAR-10 numbers; the time per sample and the
# speed-up, measured; a quality-vs-time Pareto plot; a slider; two exercises.

# %%
import matplotlib.pyplot as plt
import torch

from diffusion_course import get_profile, make_schedule, widgets
from diffusion_course.checkpoints import load_checkpoint
from diffusion_course.data import load_mnist
from diffusion_course.exercises.steps import check_speedup, check_trailing_timesteps
from diffusion_course.experiments import (
    DDIM_TABLE1_CIFAR10,
    eta_steps_table,
    pareto_front,
    speedup_at_quality,
)
from diffusion_course.metrics import classifier_features, frechet_distance, label_accuracy, sliced_w2
from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture
from diffusion_course.sampling import STRATEGIES, ddim_sample, timesteps, visits_last

P = get_profile()
print(P)

# %% [markdown]
# ## 1. Five ways to pick S of T timesteps
#
# With S = `steps`, k = 0, …, S−1 and round(·) = round half to even (`sampling.timesteps` computes these
# exactly):
#
# | strategy | timesteps | origin |
# |---|---|---|
# | `linspace` | round(k (T−1)/(S−1)), from T−1 down to 0 | diffusers' "linspace" |
# | `leading` | k ⌊T/S⌋: 0, T/S, …, T − T/S | DDIM's "uniform" skip, diffusers' default for years |
# | `trailing` | round(T (S−k)/S) − 1: T−1, T−1−T/S, …, T/S − 1 | Lin et al. (2023), the package's default |
# | `quadratic` | ⌊0.8 T (k/(S−1))²⌋ (made unique) | DDIM's CIFAR-10 grid: dense near the data |
# | `log` | round(T^u) − 1, u from 1 to 0 | dense near the data, geometric in t + 1 |
#
# Each is walked in decreasing order. Here are the ten timesteps of each for T = 1000, over the signal level
# √ᾱ_t of the linear schedule:

# %%
schedule = make_schedule("linear", T=1000)
sqrt_ab = schedule.alpha_bar.sqrt()

fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
for row, strategy in enumerate(STRATEGIES):
    ts = timesteps(1000, 10, strategy)
    axes[0].plot(ts, [row] * len(ts), "o", ms=5)
    axes[1].plot(range(10), sqrt_ab[ts], "o-", ms=4, label=strategy)
axes[0].axvline(999, color="k", lw=0.8, ls="--")
axes[0].set_yticks(range(len(STRATEGIES)), STRATEGIES)
axes[0].set_xlabel("timestep t (dashed: T−1 = 999)")
axes[0].set_title("which 10 timesteps each strategy visits")
axes[1].set_xlabel("step number (0 = first step)")
axes[1].set_ylabel("√ᾱ_t at the visited t")
axes[1].set_title("the signal level each step starts from")
axes[1].legend(fontsize=8)
for ax in axes:
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The grid that misses T−1
#
# The sampler always starts from x_T ~ N(0, I) and treats it as the state at the **first listed** timestep.
# That is only right if the first timestep is T−1, where the training data was (almost) pure noise. `leading`
# starts at T − T/S (900 for S = 10) and `quadratic` near 0.8 T, where the true x_t still carries √ᾱ_t of the
# image: the first step is handed a state that is noisier than the level it is told, so it "denoises" as if
# some of that noise were signal. `visits_last` says which grids start at T−1:

# %%
# NBVAL_CHECK_OUTPUT
step_counts = [5, 10, 20, 50, 100]
print(f"{'strategy':<10} | " + " | ".join(f"S={s:<3} first t, √ᾱ " for s in step_counts))
for strategy in STRATEGIES:
    cells = []
    for s in step_counts:
        first = int(timesteps(1000, s, strategy)[0])
        mark = " " if visits_last(1000, s, strategy) else "*"
        cells.append(f"{first:>4}{mark} {sqrt_ab[first].item():.4f}  ")
    print(f"{strategy:<10} | " + " | ".join(cells))
print("* = does not start at T−1 (√ᾱ_999 = 0.0064)")

# %%
assert not any(visits_last(1000, s, "leading") for s in step_counts)
assert all(visits_last(1000, s, "trailing") and visits_last(1000, s, "linspace") for s in step_counts)

# %% [markdown]
# How big is the mismatch? The first state the sampler sees is pure noise, while at the visited t the true
# x_t is √ᾱ_t x_0 + √(1−ᾱ_t) ε. Its signal part √ᾱ_t depends on the schedule as much as on the grid:

# %%
# NBVAL_CHECK_OUTPUT
print(
    f"{'schedule':<14} | {'√ᾱ at T−1':>9} | {'leading S=10 starts at':>22} | {'quadratic S=10 starts at':>24}"
)
for name in ("linear", "cosine", "scaled_linear"):
    s = make_schedule(name, T=1000).alpha_bar.sqrt()
    lead, quad = int(timesteps(1000, 10, "leading")[0]), int(timesteps(1000, 10, "quadratic")[0])
    print(
        f"{name:<14} | {s[-1].item():>9.4f} | t={lead}: √ᾱ = {s[lead].item():.3f}{'':>7} | t={quad}: √ᾱ = {s[quad].item():.3f}"
    )

# %% [markdown]
# For the linear schedule of our model, the true x_900 (where `leading` starts with S = 10) carries 0.016·x_0
# of signal and the sampler's start none; for `quadratic` (t = 800) it is 0.039·x_0. Small errors, which the
# next steps largely absorb: the measurements below cannot separate `leading` from `trailing`. With the
# cosine schedule the quadratic grid's start lacks 0.31·x_0. And with a zero-terminal-SNR schedule (notebook 01), t = T−1 is the *only* pure-noise level: a grid
# that skips it starts from the wrong distribution however many steps it takes. That is why Lin et al.
# recommend `trailing`, and why `visits_last` is worth checking whenever a schedule or a grid changes.
#
# ### Exercise 1: the trailing grid
#
# Write `trailing_timesteps(T, steps)`: the LongTensor t_k = round(T (S−k)/S) − 1 for k = 0, …, S−1, in
# decreasing order (the first entry is T−1). `torch.round` rounds half to even, as the definition wants.


# %%
def trailing_timesteps(T, steps):
    """t_k = round(T (S−k)/S) − 1, k = 0..S−1: T−1, …, round(T/S) − 1 (descending, int64)."""
    # BEGIN SOLUTION
    k = torch.arange(steps, dtype=torch.float64)
    return torch.round(T * (steps - k) / steps).long() - 1
    # END SOLUTION


# %%
result = check_trailing_timesteps(trailing_timesteps)
assert result.passed, result  # solution-only
result

# %% [markdown]
# ### Strategies on the oracle
#
# On the 2-D Gaussian mixture the ε-model is exact, so every difference between grids is the grid's own
# error: discretisation plus the start mismatch. We run DDIM (η = 0) from the same x_T for each strategy and
# measure the sliced 2-Wasserstein distance (SW2, 64 random directions) to a set of exact samples of the
# mixture of the same size. Even exact samples are not at SW2 = 0 from it: the "floor" (the mean over five
# independent exact sets) is as close as a perfect sampler gets on average, and differences much smaller than
# it are noise.

# %%
n_points = P.pick(quick=2000, full=20_000)
mixture = toy_mixture()
oracle = GaussianMixtureOracle(mixture, schedule)
x_T_2d = torch.randn(n_points, 2, generator=torch.Generator().manual_seed(12345))
reference_2d = mixture.sample(n_points, generator=torch.Generator().manual_seed(1))


def sw2(points):
    return sliced_w2(points, reference_2d, n_projections=64)


floor = (
    sum(sw2(mixture.sample(n_points, generator=torch.Generator().manual_seed(2 + k))) for k in range(5)) / 5
)

oracle_steps = [5, 10, 20, 50]
oracle_by_strategy = {
    strategy: [sw2(ddim_sample(oracle, x_T_2d, schedule, timesteps(1000, s, strategy))) for s in oracle_steps]
    for strategy in STRATEGIES
}

# %%
# NBVAL_CHECK_OUTPUT
print(f"oracle, DDIM η = 0, {n_points} points: SW2 to the mixture (floor {floor:.3f})")
print(f"{'strategy':<10} | " + " ".join(f"{f'S={s}':>7}" for s in oracle_steps))
for strategy, values in oracle_by_strategy.items():
    print(f"{strategy:<10} | " + " ".join(f"{v:>7.3f}" for v in values))

# %%
assert all(values[0] > values[-1] for values in oracle_by_strategy.values())  # more steps, closer

# %% [markdown]
# With the exact ε, all strategies approach the floor by S = 50; the differences are at few steps and come
# from *where* the steps are. `quadratic` (dense near the data, where the mixture's thin components are
# resolved) is the closest at every S here; `log` (very dense near the data but only a few huge steps through
# the noisy half) and `linspace` at S = 5 (which spends one of five steps on t = 0) are the furthest. `leading`
# and `trailing` are within noise of each other, as the table above predicted for this schedule.

# %% [markdown]
# ### Strategies on the model
#
# The same comparison on MNIST with the shipped model, at S = 10, from one batch of x_T (one label each),
# scored with the shipped classifier: FD to the held-out digits (lower is better) and label accuracy.
# With `n` samples the FD is biased upwards; compare the rows with each other.

# %%
model, info = load_checkpoint("mnist-cond", device=P.device)
schedule = make_schedule(info["schedule"]["name"], info["schedule"]["T"])
classifier, _ = load_checkpoint("mnist-classifier", device=P.device)
real_images, _ = load_mnist("heldout")
real_features = classifier_features(classifier, real_images)
train_images, _ = load_mnist("train")  # sorted by label: every k-th image is a class-balanced subset

n = P.pick(quick=24, full=1000)
x_T = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(12345)).to(P.device)
labels = (torch.arange(n) % 10).to(P.device)


def fd_to_heldout(samples):
    return frechet_distance(classifier_features(classifier, samples), real_features)


fd_real = fd_to_heldout(train_images[:: len(train_images) // n][:n])  # n real digits: the best to expect


model_by_strategy = {}
for strategy in STRATEGIES:
    samples = ddim_sample(model, x_T, schedule, timesteps(1000, 10, strategy), labels=labels)
    model_by_strategy[strategy] = (fd_to_heldout(samples), label_accuracy(classifier, samples, labels))

# %%
# NBVAL_CHECK_OUTPUT
print(f"model, DDIM-10 η = 0, {n} samples (FD of {n} real training digits: {fd_real:.1f})")
print(f"{'strategy':<10} | {'FD':>7} | {'accuracy':>8} | starts at T−1")
for strategy, (fd, accuracy) in model_by_strategy.items():
    print(f"{strategy:<10} | {fd:>7.2f} | {accuracy:>8.3f} | {visits_last(1000, 10, strategy)}")

# %%
assert model_by_strategy["log"][0] > model_by_strategy["trailing"][0]

# %% [markdown]
# On the model, `log` is clearly the worst with 10 steps: it crosses the noisy half of the process in two or
# three huge steps (999 → 463 → 214), where the digit's shape is decided. The other four land close to each
# other at this sample size; as on the oracle, where the steps are matters more than whether the first one is
# exactly T−1 (for this schedule).
#
# ## 3. The η × steps table
#
# DDIM's Table 1 crosses η with the number of steps. Its rows η ∈ {0, 0.2, 0.5, 1} and columns S ∈ {10, 20, 50,
# 100, 1000}, with CIFAR-10 FID (Inception features, 50,000 samples): η = 0 is best at every S < 1000, η = 1
# (DDPM) is far worse with few steps (41.1 vs 13.4 at S = 10), and the rows converge as S grows.
#
# `eta_steps_table` fills the same table for any ε-model and metric: every cell starts from the same x_T with
# the same seed, so cells differ only by η and S, and it records the sampler's time per sample. The full
# profile runs the whole table; the quick one a corner of it, with few samples.

# %%
table_etas = P.pick(quick=[0.0, 1.0], full=[0.0, 0.2, 0.5, 1.0])
table_steps = P.pick(quick=[10, 20, 50], full=[10, 20, 50, 100, 1000])
accuracies = []  # the label accuracy of each cell, in the table's order


def fd_and_accuracy(samples):
    accuracies.append(label_accuracy(classifier, samples, labels))
    return fd_to_heldout(samples)


table = eta_steps_table(
    model, x_T, schedule, table_etas, table_steps, fd_and_accuracy, labels=labels,
    metric_name=f"FD ({n} samples; {n} real digits: {fd_real:.1f})", batch_size=P.pick(quick=None, full=250),
    progress=True,
)  # fmt: skip
accuracy_table = torch.tensor(accuracies).view(len(table_etas), len(table_steps))

# %%
# NBVAL_CHECK_OUTPUT
print(table.format(paper=DDIM_TABLE1_CIFAR10))
print("\nlabel accuracy")
for eta, row in zip(table_etas, accuracy_table.tolist()):
    print(f"{eta:>5.2f} | " + " ".join(f"{a:>8.3f}" for a in row))

# %%
assert torch.isfinite(table.values).all() and (accuracy_table > 0.7).all()  # recognisable digits everywhere

# %% [markdown]
# The numbers are not comparable to the paper's (different data, network and feature extractor, and FD with a
# few dozen samples carries a large upward bias); the **shape** is what to compare: does η = 0 win at few
# steps, and does the gap shrink as S grows?
#
# The oracle is cheap, so its table gets more columns. The metric is SW2 to exact mixture samples (floor as
# above):

# %%
oracle_table = eta_steps_table(
    oracle, x_T_2d, oracle.schedule, [0.0, 0.2, 0.5, 1.0], P.pick(quick=[2, 5, 10, 20, 50], full=[2, 5, 10, 20, 50, 100, 200, 1000]),
    sw2, metric_name=f"SW2 on the oracle (floor {floor:.3f})",
)  # fmt: skip

# %%
# NBVAL_CHECK_OUTPUT
print(oracle_table.format(digits=3))

# %%
assert oracle_table.value(0.0, 5) < oracle_table.value(1.0, 5)
assert oracle_table.value(0.0, 2) > oracle_table.value(0.0, 20)

# %% [markdown]
# With the exact ε, the picture at few steps is the same as the paper's: η = 1 is worst, the deterministic
# sampler (or a little η) best. With many steps every row reaches the floor: the exact ε has no error for
# η's fresh noise to "correct" or to amplify, so from about 20 steps on the differences are below what the sample
# size can resolve.
#
# The model is another story. `benchmarks/bench_sampling.py` fills the model's table with 500 samples on two
# x_T seeds (`docs/benchmarks/sampling.md`): η = 1 is still the worst or tied for worst at 10 steps, but the
# best row is η = 0.5, in every column and on both seeds (at S = 50: FD 80.5 vs 90.9 for η = 0 on one seed,
# 84.0 vs 95.7 on the other). The oracle has no model error; our model does, and a stochastic sampler's fresh
# noise washes part of it out while a deterministic one carries it to the end. The paper's ordering is a
# statement about well-trained models, and the oracle is the clean place to see it.
#
# ## 4. Time per sample: the speed-up, measured
#
# The table recorded the sampler's wall-clock time per sample for each cell (the model calls plus the
# sampler's own arithmetic, measured on this machine, while it was doing whatever else it was doing). Cost
# is almost proportional to S, but not exactly: a part of each call does not shrink with the batch.

# %%
# NBVAL_IGNORE_OUTPUT
seconds = table.seconds[0]  # η = 0 row; η does not change the cost (one z per step is cheap)
slope, intercept = torch.linalg.lstsq(
    torch.stack([torch.tensor(table_steps, dtype=torch.float64), torch.ones(len(table_steps), dtype=torch.float64)], 1),
    seconds[:, None],
).solution[:, 0].tolist()  # fmt: skip
print(f"{'steps':>6} | {'ms per sample':>13} | speed-up vs {table_steps[-1]} steps")
for s, t in zip(table_steps, seconds.tolist()):
    print(f"{s:>6} | {1000 * t:>13.2f} | {seconds[-1].item() / t:>6.1f}×")
t_1000 = intercept + 1000 * slope
where = "measured" if 1000 in table_steps else "extrapolated from the fit a + b·S"
print(
    f"time per sample ≈ {1000 * intercept:.2f} ms + {1000 * slope:.3f} ms × S; 1000 steps: {1000 * t_1000:.0f} ms ({where})"
)

# %% [markdown]
# `benchmarks/bench_sampling.py` measures the same on a quiet machine, with DDPM's 1000 steps run for real
# (results in `docs/benchmarks/sampling.md`).
#
# ### Exercise 2: the speed-up at equal quality
#
# "10× faster" is only meaningful at equal quality. Write `speedup(steps, scores, seconds, tolerance)`: the
# reference is the entry with the **most** steps; among the entries whose score (lower is better) is within
# the relative tolerance of the reference's, score ≤ (1 + tolerance)·score_ref, take the **quickest**, and
# return seconds_ref / seconds_quickest. Use the measured seconds, not the step counts.


# %%
def speedup(steps, scores, seconds, tolerance):
    """seconds_ref / seconds of the quickest entry with score ≤ (1 + tolerance)·score_ref (ref: most steps)."""
    # BEGIN SOLUTION
    ref = int(steps.argmax())
    good_enough = scores <= (1 + tolerance) * scores[ref]
    return seconds[ref] / seconds[good_enough].min()
    # END SOLUTION


# %%
result = check_speedup(speedup)
assert result.passed, result  # solution-only
result

# %% [markdown]
# Applied to our table's η = 0 row with the package's `speedup_at_quality` (within 25 % of the FD at the most
# steps in the table):

# %%
# NBVAL_IGNORE_OUTPUT
gain = speedup_at_quality(table_steps, table.values[0], table.seconds[0], tolerance=0.25)
print(f"speed-up at equal quality (η = 0, FD within 25 % of S = {table_steps[-1]}): {gain:.1f}×")

# %% [markdown]
# ## 5. Quality against time
#
# Every cell of the table is one sampler configuration with a cost (seconds per sample) and a quality (FD).
# The configurations worth using are on the **Pareto front**: none of the others is both faster and better.

# %%
cost = table.seconds.flatten()
score = table.values.flatten()
names = [f"η={e:g}, S={s}" for e in table.etas for s in table.steps]
front = pareto_front(cost, score)

fig, ax = plt.subplots(figsize=(6.5, 4))
for i, eta in enumerate(table.etas):
    ax.plot(table.seconds[i] * 1000, table.values[i], "o-", label=f"η = {eta:g}")
ax.plot(cost[front] * 1000, score[front], "k--", lw=1, label="Pareto front")
for i in front.tolist():
    ax.annotate(
        names[i],
        (cost[i].item() * 1000, score[i].item()),
        fontsize=7,
        xytext=(4, 4),
        textcoords="offset points",
    )
ax.set_xscale("log")
ax.set_xlabel("ms per sample (log scale)")
ax.set_ylabel(table.metric)
ax.set_title("quality vs time, DDIM on the MNIST model")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Play with it
#
# Change the number of steps and the strategy: the left panel shows which timesteps are visited (the first one
# red when it is not T−1), the right one the samples from the same x_T. Watch how few steps the deterministic
# sampler needs before the digits stop changing, and what `leading` and `quadratic` do with S = 1 or 2.

# %%
# NBVAL_IGNORE_OUTPUT
app = widgets.steps_app(model, schedule, x_T[:6], labels[:6], steps=10, strategy="trailing")
app

# %% [markdown]
# ## Summary
#
# * A sampler with S steps visits S of the T training timesteps; *which* ones is a choice. `trailing` and
#   `linspace` start at T−1; `leading` and `quadratic` do not, so their first step sees a state noisier than
#   its label says: a small error for the linear schedule, a fatal one with zero terminal SNR.
# * With the exact ε (the oracle) the η × steps table has DDIM's shape: deterministic sampling (η = 0) wins
#   with few steps, η = 1 (DDPM) needs many, and the rows converge as S grows. With our small model a
#   moderate η does best: fresh noise also washes out model error.
# * Cost is measured, not counted: time per sample ≈ a + b·S, and the speed-up that matters is the one at
#   equal quality, read off the Pareto front.
#
# **Next**: guidance, trading diversity for fidelity to the label.
