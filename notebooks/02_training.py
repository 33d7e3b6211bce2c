# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Training the ε-model: one regression, many noise levels
#
# Notebook 01 showed that noising is easy: $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$
# in one jump. Generating means running that film backwards, and every backward step needs to know *which
# noise* is in $x_t$. We cannot compute it (it depends on the unknown data distribution), so we **learn**
# it: a network $\varepsilon_\theta(x_t, t)$ looks at a noisy image and the step index and guesses the
# noise. Training is plain supervised regression, because the forward process hands us (input, target)
# pairs for free: take a clean digit, draw t and ε, build $x_t$; the target is the ε we drew.
#
# **In this notebook**: the loss and why it is the right one, a training step written out line by line,
# a small U-Net trained live (watch the loss fall), the package's trainer with the extras real runs need
# (EMA, warm-up, clipping, label dropout for guidance), the shipped `mnist-cond` model to see what a longer
# run buys, and two exercises: the loss itself and the EMA update.

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diffusion_course import get_profile, make_schedule, viz
from diffusion_course.checkpoints import load_checkpoint
from diffusion_course.configs import get_config
from diffusion_course.data import load_mnist
from diffusion_course.evaluation import evaluate_samples, generate_samples
from diffusion_course.exercises.training import check_ema_update, check_training_loss
from diffusion_course.models import TinyUNet, count_parameters
from diffusion_course.sampling import ddim_sample, timesteps
from diffusion_course.training import EMA, TrainConfig, diffusion_loss, train

P = get_profile()
print(P)

# %% [markdown]
# ## 1. The objective
#
# Draw a clean image $x_0$ from the data, a step **t uniformly from {0, …, T−1}** and noise
# $\varepsilon \sim \mathcal N(0, I)$; build $x_t$ with the closed form and ask the network for ε back:
#
# $$L(\theta) = \mathbb E_{x_0,\;t \sim \mathcal U\{0,\dots,T-1\},\;\varepsilon}\;
#   \big\| \varepsilon - \varepsilon_\theta\big(\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon,\ t\big)\big\|^2 .$$
#
# This is Ho et al.'s (2020) "simple" loss. Three reasons it is the right target:
#
# * **It is well scaled at every t.** ε has unit variance whatever the noise level, so one network can
#   regress it for t = 0 and t = 999 alike. (Predicting $x_0$ directly would ask for a sharp digit from
#   pure noise at large t.)
# * **The best possible ε_θ is exactly what samplers need.** The minimiser of a squared error is the
#   conditional mean, $\varepsilon^*(x_t, t) = \mathbb E[\varepsilon \mid x_t]$, and that is the score of the
#   noisy data in disguise: $\varepsilon^* = -\sqrt{1-\bar\alpha_t}\,\nabla_{x}\log p_t(x_t)$. Every sampler in
#   this course (DDPM, DDIM, the ODE solvers) is built from it.
# * **One network, all noise levels.** Each t is its own denoising problem; drawing t uniformly trains them
#   all with shared weights. (The exact variational bound would weight the t's differently; Ho et al.
#   found that dropping the weights gives better samples.)
#
# The loss takes no labels here. A class-conditional model, like the one we ship, simply receives the
# label as a third input, $\varepsilon_\theta(x_t, t, y)$, and is trained with the same loss (section 4).
#
# ### Exercise 1: the loss of one batch
#
# Write `training_loss(model, x0, schedule, generator)`: the loss above on the batch `x0` (B, C, H, W).
# Use `generator` for all randomness, **t first, then ε** (so your numbers can be checked):
# `torch.randint(0, T, (B,), generator=generator)` and `torch.randn(x0.shape, generator=generator)`.
# Build $x_t$ yourself from `schedule.alpha_bar` (do not call `schedule.q_sample`), call `model(x_t, t)`
# and return the mean squared error as a 0-dim tensor. ᾱ_t has shape (B,): reshape it to (B, 1, 1, 1) and
# convert it to x0's dtype (`schedule.gather(schedule.alpha_bar, t, x0)` does both). The checker passes a
# fixed toy "network" as `model`.


# %%
def training_loss(model, x0, schedule, generator):
    """mean ‖ε − ε_θ(√ᾱ_t x0 + √(1 − ᾱ_t) ε, t)‖², t ~ U{0..T−1} then ε ~ N(0, I) from ``generator``."""
    # BEGIN SOLUTION
    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    alpha_bar = schedule.gather(schedule.alpha_bar, t, x0)
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    return F.mse_loss(model(x_t, t), noise)
    # END SOLUTION


# %%
result = check_training_loss(training_loss)
assert result.passed, result  # solution-only
result

# %% [markdown]
# ## 2. One training step, written out
#
# Here is the step the rest of this notebook uses. The loss part is what you just wrote (with
# `schedule.q_sample` for the closed form); then the usual three lines of any PyTorch training loop.
# Random numbers are drawn on the CPU from an explicit generator and moved to the model's device, so a seed
# gives the same run on any machine.


# %%
def train_step(model, optimizer, x0, schedule, generator):
    """One optimizer step on the ε-prediction loss; returns the loss as a float."""
    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator).to(x0.device)  # t ~ U{0..T−1}
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)  # ε ~ N(0, I)
    x_t = schedule.q_sample(x0, t, noise)  # √ᾱ_t x0 + √(1−ᾱ_t) ε, in one jump
    loss = F.mse_loss(model(x_t, t), noise)  # the target is ε itself
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


# %% [markdown]
# The package's `training.diffusion_loss` is the same loss (it also handles labels and label dropout). With
# the same seed both draw the same t and ε, so the first step's loss must equal the package's loss on the
# untouched weights:

# %%
schedule = make_schedule("linear", T=1000)
images, labels = load_mnist("train", device=P.device)
print(f"training data: {tuple(images.shape)} in [{images.min():.0f}, {images.max():.0f}], labels 0..9")

torch.manual_seed(0)
net = TinyUNet(base_channels=8, time_dim=32).to(P.device)
batch = images[:64]
package_loss = diffusion_loss(net, batch, schedule, generator=torch.Generator().manual_seed(1)).item()
optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
our_loss = train_step(net, optimizer, batch, schedule, torch.Generator().manual_seed(1))
print(f"train_step loss {our_loss:.6f}   diffusion_loss {package_loss:.6f}")

# %%
assert abs(our_loss - package_loss) < 1e-6 * max(1.0, package_loss)

# %% [markdown]
# ## 3. Training a small U-Net live
#
# `TinyUNet` is the course's first denoiser: two down-sampling levels (28 → 14 → 7), skip connections, and
# the timestep fed in through a sinusoidal embedding at the bottleneck. We make it very narrow (8 channels,
# about 21 k parameters) so that a short run fits in a few seconds on a laptop CPU, and train it with Adam on
# batches of 64 digits of the MNIST training split. Watch the loss.

# %%
steps = P.pick(quick=120, full=3000)
batch_size = 64
torch.manual_seed(0)
net = TinyUNet(base_channels=8, time_dim=32).to(P.device)
optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
data_gen, noise_gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
print(f"TinyUNet: {count_parameters(net):,} parameters; {steps} steps of batch {batch_size}")

losses = []
start = time.perf_counter()
for _ in tqdm(range(steps), desc="train TinyUNet"):
    idx = torch.randint(0, images.shape[0], (batch_size,), generator=data_gen).to(P.device)
    losses.append(train_step(net, optimizer, images[idx], schedule, noise_gen))
seconds = time.perf_counter() - start
print(f"{steps} steps in {seconds:.1f} s; loss: first 10 steps {np.mean(losses[:10]):.3f}, "
      f"last 20 steps {np.mean(losses[-20:]):.3f}")  # fmt: skip

# %%
assert np.mean(losses[:10]) > 0.5 and np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10])

# %% [markdown]
# A network that outputs 0 scores exactly 1 (the variance of ε); a random one does a little worse, so the
# first steps start at 1 or above. The loss then falls fast and flattens: most of what is easy to learn is learned in the first few hundred steps.
# The curve stays noisy because every batch draws new t's, and some t's are much harder than others:

# %%
x_probe = images[:64]
probe_gen = torch.Generator().manual_seed(5)
noise_probe = torch.randn(x_probe.shape, generator=probe_gen).to(P.device)
t_grid = torch.linspace(0, schedule.T - 1, 25).round().long()
with torch.no_grad():
    loss_by_t = [F.mse_loss(net(schedule.q_sample(x_probe, int(t), noise_probe), torch.full((64,), int(t),
                 device=P.device)), noise_probe).item() for t in t_grid]  # fmt: skip

fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
axes[0].plot(losses, lw=0.8, alpha=0.5, label="per step")
window = 10
axes[0].plot(np.arange(window - 1, steps), np.convolve(losses, np.ones(window) / window, "valid"),
             label=f"mean of {window}")  # fmt: skip
axes[0].set_xlabel("step")
axes[0].set_ylabel("ε-MSE")
axes[0].set_title("training loss")
axes[0].legend()
axes[1].plot(t_grid, loss_by_t, "o-")
axes[1].set_xlabel("t")
axes[1].set_ylabel("ε-MSE on 64 digits")
axes[1].set_title("after training: the loss at each t")
fig.tight_layout()
plt.show()

# %%
assert loss_by_t[0] > loss_by_t[-1]  # small t is the hard end for ε-prediction

# %% [markdown]
# At large t, $x_t$ is almost pure noise, so "ε ≈ x_t" is nearly right and the loss is small. At small t
# the noise is a faint film over a digit and the network must tell a stroke's edge from a noise speck:
# the loss is largest there. (Those small-t errors matter little for sampling, since there x̂₀ barely
# depends on ε; the large-t ones decide the digit's shape.)
#
# What can 120 steps of a 21 k-parameter net draw? DDIM with 20 steps from pure noise (notebook 04 derives
# the sampler; here it is just a tool):

# %%
x_T = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(P.device)
tiny_samples = ddim_sample(net.eval(), x_T, schedule, timesteps(schedule.T, 20))
viz.show_images(tiny_samples.clamp(-1, 1), nrow=10, title=f"TinyUNet after {steps} steps: DDIM, 20 steps")

# %% [markdown]
# Speckle and blobs: the network has learned that an image is mostly dark with some ink, not yet what a
# stroke is. Training the real model is the same loop run much longer on a bigger network; section 5 shows
# the result.
#
# ## 4. The same loop in the package: `train`
#
# `diffusion_course.training.train` runs exactly this step, plus what a long run needs:
#
# | ingredient | what it does | `TrainConfig` field |
# |---|---|---|
# | AdamW, linear warm-up of the learning rate | no huge early updates from random weights | `lr`, `warmup_steps` |
# | gradient-norm clipping | one bad batch cannot throw the weights away | `grad_clip` |
# | **EMA** of the weights | a smoothed copy that samples better than the raw weights (Exercise 2) | `ema_decay` |
# | **label dropout** | trains the unconditional model too, for classifier-free guidance | `p_uncond` |
# | bf16 autocast and channels-last on CUDA, DDP under `torchrun` | speed on GPUs | `bf16`, `channels_last` |
# | seeded data, noise and dropout streams, resumable state | the same run twice gives the same weights | `seed` |
#
# **Label dropout and the null class.** The shipped model is conditional: `UNet(num_classes=10)` learns a
# vector per digit *plus an eleventh, the null class ∅ (index 10)*. During training each label is replaced by
# ∅ with probability `p_uncond` = 0.1, so the same network also learns the unconditional
# $\varepsilon_\theta(x_t, t, \varnothing)$. At sampling time the two predictions are combined to push samples
# towards their class: that is classifier-free guidance, the topic of notebook 07.
#
# Here is the real architecture of `mnist-cond` (built from the `mnist-cond` run config, fresh weights)
# trained for a handful of steps, only to show the API:

# %%
run = get_config("mnist-cond")
unet = run.build_model()
config = TrainConfig(steps=P.pick(quick=4, full=200), batch_size=P.pick(quick=16, full=128), lr=1e-3,
                     warmup_steps=2, p_uncond=0.1, ema_decay=0.999, seed=0, log_every=2,
                     device=str(P.device))  # fmt: skip
result = train(unet, images.cpu(), labels.cpu(), schedule, config)
print(f"UNet: {count_parameters(unet):,} parameters, class table {tuple(unet.class_embedding.table.weight.shape)} "
      f"(10 digits + the null class)")  # fmt: skip
print(
    f"{result.step} steps; losses {[round(v, 3) for v in result.losses]}; EMA copy: {type(result.ema_model).__name__}"
)

# %%
assert result.step == config.steps and len(result.losses) == config.steps
assert unet.class_embedding.table.weight.shape[0] == 11 and all(math.isfinite(v) for v in result.losses)

# %% [markdown]
# The same run from the command line writes a checkpoint (weights in safetensors, everything else in JSON):
#
# ```bash
# python -m diffusion_course train --config mnist-cond --out runs/mnist-cond
# python -m diffusion_course sample --checkpoint runs/mnist-cond/mnist-cond --sampler ddim --steps 50 --n 64 --out grid.png
# python -m diffusion_course evaluate --checkpoint runs/mnist-cond/mnist-cond --sampler ddim --steps 50 --n 500 --json
# ```
#
# ## 5. What training buys: the shipped `mnist-cond`
#
# We ship that run, trained for several thousand steps of 64 digits on a 2-core CPU. Its JSON records how it
# was made:

# %%
model, info = load_checkpoint("mnist-cond", device=P.device)
print(f"{info['num_parameters']:,} parameters, {info['step']} steps of batch {info['train_config']['batch_size']}, "
      f"p_uncond {info['train_config']['p_uncond']}, EMA decay {info['train_config']['ema_decay']}")  # fmt: skip
print(f"trained on {info['device']} by: {info['command']}")
print(
    f"final loss (mean of the last 100 steps) {info['metrics']['final_loss']:.4f}; ours: {np.mean(losses[-20:]):.3f}"
)
print(f"{info['num_parameters'] / count_parameters(net):.0f}× our TinyUNet's parameters, "
      f"{info['step'] / steps:.0f}× its steps")  # fmt: skip

# %% [markdown]
# Twenty samples, labels 0…9 twice, with the same sampler as above (DDIM, 20 steps, no guidance).
# `generate_samples` is the function behind `python -m diffusion_course sample`; `evaluate_samples` scores
# the samples with the course's digit classifier (does each sample look like the digit it was asked for?).

# %%
n_show = P.pick(quick=20, full=100)
samples, sample_labels = generate_samples(model, info, "ddim", 20, n=n_show, seed=0, progress=True)
scores = evaluate_samples(samples, sample_labels, device=P.device)
print(f"label accuracy of {n_show} samples: {scores['label_accuracy']:.2f}")
viz.show_images(samples[:20].clamp(-1, 1), nrow=10, labels=[str(int(k)) for k in sample_labels[:20]],
                title="mnist-cond: DDIM, 20 steps, labels 0–9")  # fmt: skip

# %%
assert scores["label_accuracy"] >= 0.7  # 0.90 here (seed 0); on 500 samples see data/README.md

# %% [markdown]
# Same loss, same loop; a network about 30 times bigger, trained far longer, turns ink blobs into digits
# of the requested class. The loss barely shows it: ours ended near 0.1 and the shipped one near 0.02, and
# most of the visible progress happens while the loss is already low and nearly flat: between step 4,000 and
# step 7,000 the shipped run's loss went from 0.0249 to 0.0235, while the label accuracy of 500 DDIM-50
# samples rose from 0.84 to 0.92. That is why the
# course judges models by their **samples** (label accuracy, the Fréchet distance on classifier features in
# `evaluate`), not by the training loss.
#
# ## 6. Exercise 2: the EMA of the weights
#
# The weights after the last optimizer step are noisy: each step moves them along one batch's gradient. Samples
# come out better from an **exponential moving average** of the weights, updated after every step:
#
# $$\theta_{\text{ema}} \leftarrow d\,\theta_{\text{ema}} + (1-d)\,\theta, \qquad d = 0.999 .$$
#
# **The bias.** The average starts at the random initial weights θ₀, and after n updates θ₀ still holds a
# share $d^n$ of it: 0.999¹⁰⁰⁰ ≈ 0.37, so after 1,000 steps more than a third of the "averaged" model is
# still random initialisation. (Adam has the same problem with its moment estimates started at zero and
# divides by $1-d^n$; for weights, a warm-up is simpler.) The trainer ramps the decay up:
#
# $$d_n = \min\!\Big(d,\ \frac{1+n}{10+n}\Big) \quad\text{for the } n\text{-th update } (n = 0, 1, \dots),$$
#
# so the first updates nearly copy the weights (d₀ = 0.1) and the average forgets θ₀ quickly. The share of θ₀
# after n updates is the product of the decays:

# %%
n_updates = np.arange(1, 4001)
plain_share = 0.999**n_updates
warm_share = np.cumprod([min(0.999, (1 + n) / (10 + n)) for n in range(4000)])
for n in (100, 1000, 4000):
    print(f"after {n:>4} updates: share of the initial weights  plain {plain_share[n - 1]:.3f}   "
          f"warm-up {warm_share[n - 1]:.2e}")  # fmt: skip

# %%
assert abs(plain_share[999] - math.exp(1000 * math.log(0.999))) < 1e-12 and 0.36 < plain_share[999] < 0.37
assert warm_share[999] < 1e-6

# %% [markdown]
# Write `ema_update(ema, weights, decay, num_updates)`: return the new average of one tensor, with the
# warmed-up decay $d_n$ for `num_updates` = n. Return a new tensor; do not change `ema` in place.


# %%
def ema_update(ema, weights, decay, num_updates):
    """θ_ema ← d_n θ_ema + (1 − d_n) θ with d_n = min(decay, (1 + n)/(10 + n))."""
    # BEGIN SOLUTION
    d = min(decay, (1 + num_updates) / (10 + num_updates))
    return d * ema + (1 - d) * weights
    # END SOLUTION


# %%
result = check_ema_update(ema_update)
assert result.passed, result  # solution-only
result

# %% [markdown]
# The trainer's `EMA` class does this for every parameter after each optimizer step; checkpoints store the
# EMA weights, and all samplers in this course use them. A check that the class follows the formula:

# %%
layer = torch.nn.Linear(4, 3)
ema = EMA(layer, decay=0.999)
before = ema.model.weight.detach().clone()
with torch.no_grad():
    layer.weight.add_(1.0)
ema.update(layer)  # n = 0: d_0 = min(0.999, 1/10) = 0.1
assert torch.allclose(ema.model.weight, 0.1 * before + 0.9 * layer.weight.detach())

# %% [markdown]
# ## 7. Longer runs and GPUs
#
# * **The shipped run** (`mnist-cond`: 0.69 M parameters, 7,000 steps of 64) took about 65 minutes on the
#   2-core CPU this course is tested on, which was shared with other work at the time (`data/README.md` has
#   the details). With DDIM-50 and no guidance, 500 samples reach a label accuracy of 0.92 and an FD of 97,
#   about what 500 real digits score against the held-out ones (86–100).
# * **The full profile** trains `mnist-cond-full` (6.5 M parameters, dropout 0.1, 20,000 steps of 128 with bf16
#   on CUDA): `python -m diffusion_course train --config mnist-cond-full --out runs/full`. The config estimates
#   10–15 minutes on one GPU; we have not timed it in this repository. Measured training throughputs of both
#   architectures on the CPU are in `docs/benchmarks/training.md`.
# * **What a longer run changes**: the loss keeps creeping down slowly, while the samples keep improving
#   visibly (cleaner strokes, fewer malformed digits, higher label accuracy without guidance). Bigger
#   networks need more steps and a smaller learning rate (2·10⁻⁴ in the full config), and the EMA decay can
#   go up (0.9995) because there are more steps to average over.
# * **What it does not change**: the loss, the step and the samplers. Everything in the next notebooks works
#   the same on a better checkpoint: copy its two files into `data/checkpoints/` under the name a notebook
#   loads (see `docs/INSTRUCTORS.md`).
#
# ## Summary
#
# * Training is regression: $L = \mathbb E\,\|\varepsilon - \varepsilon_\theta(\sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon, t)\|^2$
#   with t uniform over {0, …, T−1}; the target is the noise, and the best ε_θ is the (scaled) score.
# * One step: draw t and ε, jump to $x_t$ in closed form, regress, update. The package's `train` adds
#   warm-up, clipping, EMA, label dropout and the GPU tricks around the same step.
# * The loss is a poor judge of a diffusion model; samples (and the metrics on them) tell.
# * Label dropout trains an unconditional model inside the conditional one, through the null class.
#
# **Next**: notebook 03 turns a trained ε-model into a sampler, the DDPM reverse process.
