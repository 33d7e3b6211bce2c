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
# a small U-Net trained live (watch the loss fall), the ε-loss against the x₀-loss, the package's trainer
# with the extras real runs need (EMA, warm-up, clipping, label dropout for guidance), the shipped
# `mnist-cond` model to see what a longer run buys (and whether it copies its training digits), and two
# exercises: the loss itself and the EMA update.

# %% [markdown]
# > **Conventions (the same in every notebook).** Formulas use the paper's time: $x_0$ is the clean image and
# > $x_t$, $t = 1, \dots, T$, is the state after $t$ noising steps. Code uses an index `t` ∈ {0, …, T−1} that is
# > the paper's $t-1$: `alpha_bar[t]` $=\prod_{s \le t}(1-\beta_s)$ is the paper's $\bar\alpha_{t+1}$, the
# > pure-noise start $x_T$ sits at index T−1, and a sampler's last step goes from its smallest index to the
# > clean image ($\bar\alpha = 1$). "$x_0$" always means the clean image, never the state at index 0. Images are
# > in [−1, 1], shape (B, C, H, W). Every quality number is printed with its 95 % interval, and a ranking is
# > stated only where the intervals separate.

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diffusion_course import get_profile, make_schedule, viz, widgets
from diffusion_course.checkpoints import load_checkpoint
from diffusion_course.configs import get_config
from diffusion_course.data import load_mnist
from diffusion_course.evaluation import generate_samples
from diffusion_course.exercises.training import check_ema_update, check_training_loss
from diffusion_course.metrics import nearest_neighbour_distance
from diffusion_course.models import TinyUNet, count_parameters
from diffusion_course.reference_results import estimate, load_results
from diffusion_course.sampling import ddim_sample, predict_x0, timestep_grid
from diffusion_course.scoring import Estimate, Scorer, compare, wilson_interval
from diffusion_course.training import EMA, TrainConfig, diffusion_loss, train

P = get_profile()
print(P)

# %% [markdown]
# ## 1. The objective
#
# Draw a clean image $x_0$ from the data, a step **t uniformly from {1, …, T}** (in code: an index drawn
# uniformly from {0, …, T−1}) and noise $\varepsilon \sim \mathcal N(0, I)$; build $x_t$ with the closed form
# and ask the network for ε back:
#
# $$L(\theta) = \mathbb E_{x_0,\;t \sim \mathcal U\{1,\dots,T\},\;\varepsilon}\;
#   \big\| \varepsilon - \varepsilon_\theta\big(\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon,\ t\big)\big\|^2 .$$
#
# This is Ho et al.'s (2020) "simple" loss. Why this target:
#
# * **It is well scaled at every t.** ε has unit variance whatever the noise level, so one network regresses
#   a target of the same size at every t, from $x_1$ to $x_T$.
# * **Predicting $x_0$ instead is not wrong; it weights the noise levels differently.** A network could
#   regress $x_0$ instead. The best x₀-predictor under squared error is not a sharp digit but the posterior
#   mean $\mathbb E[x_0 \mid x_t]$, at large t a blurry average of every digit that could have produced
#   $x_t$, and it is exactly the $\hat x_0$ that the best ε-predictor gives, because
#   $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$ is an affine function of
#   $\hat\varepsilon$ (the package's `predict_x0`). The two losses differ only in their weight per t: from
#   $\hat x_0 - x_0 = -\sqrt{(1-\bar\alpha_t)/\bar\alpha_t}\,(\hat\varepsilon - \varepsilon)$,
#
#   $$\|\hat x_0 - x_0\|^2 = \frac{1-\bar\alpha_t}{\bar\alpha_t}\,\|\hat\varepsilon - \varepsilon\|^2
#   \quad\Longleftrightarrow\quad \|\hat\varepsilon - \varepsilon\|^2 = \mathrm{SNR}(t)\,\|\hat x_0 - x_0\|^2,
#   \qquad \mathrm{SNR}(t) = \frac{\bar\alpha_t}{1-\bar\alpha_t}.$$
#
#   The ε-loss is the x₀-loss weighted by SNR(t): it stresses the low-noise steps, where SNR is large, and
#   all but ignores x₀ errors at high noise. Section 3 checks the identity on a trained network.
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
    """mean ‖ε − ε_θ(√ᾱ x0 + √(1 − ᾱ) ε, t)‖²; code index t ~ U{0..T−1}, then ε, from ``generator``."""
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
    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator).to(x0.device)  # code index
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
# about 21 k parameters) so that a short run fits on a laptop CPU (its time is printed), and train it with
# Adam on batches of 64 digits of the MNIST training split. Watch the loss.

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
assert 20_000 < count_parameters(net) < 22_000
assert np.mean(losses[:10]) > 0.5 and np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10])

# %% [markdown]
# A network that outputs 0 scores 1 in expectation (the variance of ε), and the untrained net starts in that
# region (the first steps' mean is above 0.5, asserted). Within the run the mean loss falls to less than half
# its starting value (asserted above). The curve stays noisy because every batch draws new t's, and some
# t's are much harder than others. In the middle and on the right, the trained net at 25 fixed code indices:
# its ε-error and, through `predict_x0`, the error of the x̂₀ it implies, which must obey the identity of
# section 1.

# %%
x_probe = images[:64]
probe_gen = torch.Generator().manual_seed(5)
noise_probe = torch.randn(x_probe.shape, generator=probe_gen).to(P.device)
t_grid = torch.linspace(0, schedule.T - 1, 25).round().long()
loss_by_t, x0_loss_by_t, identity_error = [], [], []
with torch.no_grad():
    for t in t_grid.tolist():
        x_t = schedule.q_sample(x_probe.double(), t, noise_probe.double())  # float64: x̂₀ divides by √ᾱ
        eps_hat = net(x_t.float(), torch.full((64,), t, device=P.device)).double()
        ab = float(schedule.alpha_bar[t])
        x0_hat = predict_x0(x_t, eps_hat, ab)
        eps_mse = F.mse_loss(eps_hat, noise_probe.double()).item()
        x0_mse = F.mse_loss(x0_hat, x_probe.double()).item()
        loss_by_t.append(eps_mse)
        x0_loss_by_t.append(x0_mse)
        identity_error.append(abs(x0_mse / ((1 - ab) / ab * eps_mse) - 1))
print(
    f"x0-MSE / ((1 - ab)/ab * eps-MSE) - 1: largest deviation over the 25 indices {max(identity_error):.1e}"
)

fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
axes[0].plot(losses, lw=0.8, alpha=0.5, label="per step")
window = 10
axes[0].plot(np.arange(window - 1, steps), np.convolve(losses, np.ones(window) / window, "valid"),
             label=f"mean of {window}")  # fmt: skip
axes[0].set_xlabel("step")
axes[0].set_ylabel("ε-MSE")
axes[0].set_title("training loss")
axes[0].legend()
axes[1].plot(t_grid, loss_by_t, "o-")
axes[1].set_xlabel("code index t")
axes[1].set_ylabel("ε-MSE on 64 digits")
axes[1].set_title("after training: the ε-loss at each t")
axes[2].semilogy(t_grid, x0_loss_by_t, "o-", color="C1")
axes[2].set_xlabel("code index t")
axes[2].set_ylabel("x̂₀-MSE on 64 digits")
axes[2].set_title("the same errors as x̂₀-MSE (log scale)")
fig.tight_layout()
plt.show()

# %%
assert max(identity_error) < 1e-6  # ‖x̂₀ − x₀‖² = (1 − ᾱ)/ᾱ · ‖ε̂ − ε‖², up to float rounding
assert loss_by_t[0] > loss_by_t[-1]  # ε-loss: the small-t end is the hard one
assert x0_loss_by_t[-1] > x0_loss_by_t[0]  # x̂₀-loss: the large-t end is the hard one

# %% [markdown]
# At large t, $x_t$ is almost pure noise, so "ε ≈ x_t" is nearly right and the ε-loss is small. At small t
# the noise is a faint film over a digit and the network must tell a stroke's edge from a noise speck, so
# the ε-loss is larger there (at the first index than at the last, asserted). Seen through x̂₀ the
# picture turns around: the same errors, multiplied by (1 − ᾱ)/ᾱ, are tiny at small t (the factor is
# about 10⁻⁴ at code index 0) and huge at large t (about 2.5·10⁴ at code index 999, where x̂₀ has to guess
# the digit from almost nothing). So the ε-loss spends its effort where x̂₀ barely depends on ε, and weights
# the large-t errors, which decide the digit's shape, very lightly.
#
# What can this short run draw? DDIM with 20 steps from pure noise (notebook 04 derives the sampler; here
# it is just a tool):

# %%
x_T = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(P.device)
tiny_samples = ddim_sample(net.eval(), x_T, schedule, timestep_grid(schedule.T, 20))
viz.show_images(tiny_samples.clamp(-1, 1), nrow=10, title=f"TinyUNet after {steps} steps: DDIM, 20 steps")

# %% [markdown]
# After the quick profile's 120 steps: speckle and blobs. The network has learned that an image is mostly
# dark with some ink, not yet what a stroke is. Training the real model is the same loop run much longer on
# a bigger network; section 5 shows the result.
#
# ## 4. The same loop in the package: `train`
#
# `diffusion_course.training.train` runs exactly this step, plus what a long run needs:
#
# | ingredient | what it does | `TrainConfig` field |
# |---|---|---|
# | AdamW, linear warm-up of the learning rate | no huge early updates from random weights | `lr`, `warmup_steps` |
# | gradient-norm clipping | one bad batch cannot throw the weights away | `grad_clip` |
# | **EMA** of the weights | a smoothed copy, the one the course samples from (Exercise 2) | `ema_decay` |
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
# We ship that run, trained for several thousand steps of 64 digits on a 2-core CPU. `load_checkpoint` returns
# a `Checkpoint`: the model (in eval mode, on the profile's device), the noise schedule it was trained with,
# its number of classes (`None` for an unconditional model), and `info`, the checkpoint's JSON, which records
# how it was made:

# %%
checkpoint = load_checkpoint("mnist-cond", device=P.device)
info = checkpoint.info
print(f"{type(checkpoint.model).__name__} with {checkpoint.classes} classes, schedule {checkpoint.schedule}")
print(f"{info['num_parameters']:,} parameters, {info['step']} steps of batch {info['train_config']['batch_size']}, "
      f"p_uncond {info['train_config']['p_uncond']}, EMA decay {info['train_config']['ema_decay']}")  # fmt: skip
print(f"trained on {info['device']} by: {info['command']}")
print(
    f"final loss (mean of the last 100 steps) {info['metrics']['final_loss']:.4f}; ours: {np.mean(losses[-20:]):.3f}"
)
print(f"{info['num_parameters'] / count_parameters(net):.0f}× our TinyUNet's parameters, "
      f"{info['step'] / steps:.0f}× its steps")  # fmt: skip

# %% [markdown]
# Samples with labels 0…9 in turn, from the same sampler as above (DDIM, 20 steps, no guidance), 100 of them
# in the quick profile. `generate_samples` is the function behind `python -m diffusion_course sample`; the
# course's `Scorer` asks its digit classifier whether each sample shows the digit it was asked for (label
# accuracy, with a Wilson 95 % interval) and gives KID on the classifier's features. At n = 100 the Fréchet
# distance means little (128 features, a rank-deficient covariance), so it is not printed here.

# %%
n_show = P.pick(quick=100, full=500)
samples, sample_labels = generate_samples(checkpoint, "ddim", 20, n=n_show, seed=0, progress=True)
scorer = Scorer(device=P.device)
scores = scorer.score(samples, sample_labels)
print(f"this run, DDIM-20, {n_show} samples: {scores.label_accuracy}; {scores.kid}")
viz.show_images(samples[:20].clamp(-1, 1), nrow=10, labels=[str(int(k)) for k in sample_labels[:20]],
                title="mnist-cond: DDIM, 20 steps, labels 0–9 (the first 20)")  # fmt: skip

# %% [markdown]
# One small live run says little on its own. The same sampler (DDIM, η = 0, 20 trailing steps, no
# guidance) was run on more samples (n printed) for the course's reference table `eta-steps`
# (`data/results/`), next to as many real training digits scored the same way (the "floor": the best any
# model can do at that n):

# %%
reference = load_results("eta-steps")
print(f"reference run: {reference['command']}")
model_vs_real = {}
for metric in ("label_accuracy", "fd", "kid"):
    model_vs_real[metric] = compare(
        estimate(reference, "η = 0", "S = 20", metric), estimate(reference, "floor", "", metric)
    )
    print(f"  DDIM-20 (A) vs real digits (B): {model_vs_real[metric]}")
live_vs_reference = compare(scores.label_accuracy, estimate(reference, "η = 0", "S = 20", "label_accuracy"))
print("live run (A) vs reference (B), label accuracy:", live_vs_reference)

# %%
assert live_vs_reference.verdict == "indistinguishable"
assert scores.label_accuracy.low > 0.5  # most samples show the digit they were asked for
assert model_vs_real["fd"].verdict == model_vs_real["kid"].verdict == "indistinguishable"
assert model_vs_real["label_accuracy"].verdict == "B better"

# %% [markdown]
# Most samples show the digit they were asked for: in this run the lower end of the label accuracy's
# interval is above 0.5, and the live figure is indistinguishable from the reference table's (asserted). At
# the table's n, the model's DDIM-20 samples are indistinguishable from real digits in FD and KID (the
# intervals overlap the floor's), but not in label accuracy: real digits are labelled correctly more often,
# and those intervals separate. The classifier still tells the model's digits from real ones where the
# Fréchet distance, at this n, cannot.
#
# ### Does the model copy its training digits?
#
# A network of 0.69 M parameters trained for about 100 passes over 4,500 digits (7,000 steps of 64) could
# in principle memorise them and hand back copies, and a high label accuracy would not show it. A direct probe: for each
# sample, the Euclidean distance (over the 784 pixels) to its nearest training digit
# (`metrics.nearest_neighbour_distance`). The yardstick is the same distance for the 500 **held-out** real
# digits, which no model saw: it shows how close a *new* digit typically comes to the training set. Copies
# would sit much closer than that (an exact copy at 0). The samples are clipped to [−1, 1], the range of
# real digits, before they are compared.

# %%
train_images, _ = load_mnist("train")
heldout_images, _ = load_mnist("heldout")
d_samples, nearest = nearest_neighbour_distance(samples.clamp(-1, 1), train_images, return_index=True)
d_heldout, nearest_heldout = nearest_neighbour_distance(heldout_images, train_images, return_index=True)

levels = torch.tensor([0.0, 0.05, 0.25, 0.5, 0.75], dtype=torch.float64)
print(f"distance to the nearest of {len(train_images):,} training digits; quantiles {levels.tolist()}")
for name, d in [(f"{len(d_samples)} samples", d_samples), (f"{len(d_heldout)} held-out digits", d_heldout)]:
    print(f"  {name:>20}: " + "  ".join(f"{q:5.2f}" for q in torch.quantile(d, levels).tolist()))

# how many samples sit closer to the training set than 95 % of unseen digits do (5 % if they behave alike)
cut = float(torch.quantile(d_heldout, 0.05))
close = int((d_samples < cut).sum())
close_low, close_high = wilson_interval(close, len(d_samples))
print(
    f"below the held-out 5 % quantile ({cut:.2f}): {close} of {len(d_samples)} samples, "
    f"{close / len(d_samples):.3f} [{close_low:.3f}, {close_high:.3f}] (Wilson 95 %)"
)


# the difference of the median distances, samples minus held-out, with a bootstrap 95 % interval
def median(d):
    return float(torch.quantile(d, 0.5))


g = torch.Generator().manual_seed(0)
boot = torch.tensor(
    [
        median(d_samples[torch.randint(len(d_samples), (len(d_samples),), generator=g)])
        - median(d_heldout[torch.randint(len(d_heldout), (len(d_heldout),), generator=g)])
        for _ in range(1000)
    ],
    dtype=torch.float64,
)
median_difference = median(d_samples) - median(d_heldout)
diff_low, diff_high = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
print(
    f"median distance: samples {median(d_samples):.2f}, held-out {median(d_heldout):.2f}; "
    f"difference {median_difference:+.2f} [{diff_low:+.2f}, {diff_high:+.2f}] (bootstrap 95 %)"
)

# the 8 samples closest to the training set above their nearest training digit; the same for held-out digits
closest, closest_heldout = d_samples.argsort()[:8], d_heldout.argsort()[:8]
rows = [
    samples[closest].clamp(-1, 1),
    train_images[nearest[closest]],
    heldout_images[closest_heldout],
    train_images[nearest_heldout[closest_heldout]],
]
row_labels = (
    [f"sample {d_samples[i]:.2f}" for i in closest.tolist()]
    + ["train"] * 8
    + [f"held-out {d_heldout[i]:.2f}" for i in closest_heldout.tolist()]
    + ["train"] * 8
)
viz.show_images(
    torch.cat(rows),
    nrow=8,
    labels=row_labels,
    title="closest samples / their nearest training digit / closest held-out digits / theirs",
)

# %% [markdown]
# What this run shows (numbers printed above, claims asserted below):
#
# * **As a group, the samples sit no closer to the training set than unseen real digits do.** The share of
#   samples below the held-out digits' 5 % quantile has an interval that reaches down to 5 % or below (5 % is
#   what samples behaving like unseen digits would give), and the median distance of the samples minus that of
#   the held-out digits has a bootstrap interval above 0: the samples are slightly *farther* from their
#   nearest training digit than unseen digits are (one reading: samples a little less typical than real
#   digits).
# * **Single near-look-alikes are not evidence of copying.** The closest samples look very much like their
#   nearest training digit, but so do the closest *held-out* digits, which the model never saw (bottom two
#   rows): simple shapes such as a 1 have near twins in 4,500 digits. At these distances, pixel distance
#   cannot tell a copy from a close match.
# * **What the probe cannot see**: copying rarer than the upper end of that interval (printed above), and
#   copies that are shifted or re-stroked, since pixel distance is not perceptual.

# %%
assert close_low <= 0.05  # not more samples near the training set than unseen digits put there
assert diff_low > 0  # the samples are farther from the training set than unseen digits, not closer

# %% [markdown]
# Same loss, same loop; a network about 30 times bigger (printed above), trained far longer, turns ink blobs
# into digits of the requested class. The training loss is a poor judge of that: it weights every noise level
# alike in ε, so (section 3) its largest terms sit at small t, where they matter least for the samples.
# Samples also keep improving late in a run. The shipped run was scored at 4,000 steps and again at 7,000
# (500 DDIM-50 samples each, `docs/benchmarks/training.md`; the counts below are those accuracies × 500):

# %%
at_4000 = Estimate("label accuracy", 421 / 500, *wilson_interval(421, 500), 500, False, "Wilson 95 %")
at_7000 = Estimate("label accuracy", 462 / 500, *wilson_interval(462, 500), 500, False, "Wilson 95 %")
later_vs_earlier = compare(at_7000, at_4000)
print("7,000 vs 4,000 steps:", later_vs_earlier)
assert later_vs_earlier.verdict == "A better"

# %% [markdown]
# That is why the course judges models by their **samples** (label accuracy, KID and the Fréchet distance
# on classifier features, each with its interval), not by the training loss.
#
# ## 6. Exercise 2: the EMA of the weights
#
# The weights after the last optimizer step are noisy: each step moves them along one batch's gradient.
# Diffusion models are therefore usually sampled from an **exponential moving average** of the weights (Ho
# et al. 2020 do so), updated after every step:
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
#   the details). Its quality, with intervals, is in the reference table above and in `data/results/`.
# * **The full profile** trains `mnist-cond-full` (6.5 M parameters, dropout 0.1, 20,000 steps of 128 with bf16
#   on CUDA): `python -m diffusion_course train --config mnist-cond-full --out runs/full`. The config estimates
#   10–15 minutes on one GPU; that has not been timed in this repository. Measured training throughputs of
#   both architectures on the CPU are in `docs/benchmarks/training.md`.
# * **What a longer run changes**: for the shipped model, going from 4,000 to 7,000 steps raised the label
#   accuracy of DDIM-50 samples (section 5, intervals separate); nothing longer was measured here. The full
#   config pairs its bigger network with a smaller learning rate (2·10⁻⁴) and a higher EMA decay (0.9995,
#   there are more steps to average over).
# * **What it does not change**: the loss, the step and the samplers. Everything in the next notebooks works
#   the same on a better checkpoint: copy its two files into `data/checkpoints/` under the name a notebook
#   loads (see `docs/INSTRUCTORS.md`).
#
# ## 8. Train your own
#
# The shipped model took about an hour of a shared 2-core CPU. The config `mnist-cond-fast` trains the same
# U-Net with a recipe meant for one sitting: a higher learning rate decayed over 4,000 steps or the time
# budget, whichever ends first, the Min-SNR-5 loss weight (the low-noise steps, whose ε error says little
# about x₀, stop dominating the gradient) and a shorter EMA. On one of the course's 2-core machines its 4,000
# steps took 547 s and gave DDIM-50 label accuracy 0.920 [0.893, 0.941] (n = 500). On a slower 2-core machine
# 600 s held about 1,700 steps, and the same U-Net with the decay over those reached 0.864 [0.831, 0.891]
# (`docs/benchmarks/training.md` has every variant tried). The app below
# trains it **in the background of this kernel**, so the notebook stays usable: press *Start*, watch the loss
# and one digit of each class drawn from the EMA weights every 100 steps, and press *Stop* or let the time
# budget run out. When the run stops, the model is saved to `my_checkpoints/mine.json` beside this notebook;
# *Start* again continues the same run. Notebooks 03 and 04 sample it when you set `MODEL = "mine"` at their
# model cell (while you have none they use the shipped model and say so). The same run from a terminal:
# `python -m diffusion_course train --config mnist-cond-fast --out my_checkpoints --time-budget 600`.
#
# Nothing trains until you press *Start*.

# %%
# NBVAL_IGNORE_OUTPUT
app, my_run = widgets.train_your_own_app("mnist-cond-fast", budget=600)
app

# %% [markdown]
# ## Summary
#
# * Training is regression: $L = \mathbb E\,\|\varepsilon - \varepsilon_\theta(\sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon, t)\|^2$
#   with t uniform over {1, …, T} (code indices 0, …, T−1); the target is the noise, and the best ε_θ is the
#   (scaled) score.
# * Predicting x₀ instead is the same problem with another weight per t: ‖x̂₀ − x₀‖² = (1 − ᾱ)/ᾱ · ‖ε̂ − ε‖²
#   (checked on the trained net to float rounding), so the ε-loss is the x₀-loss weighted by SNR(t), and
#   the best x₀-predictor is the blurry posterior mean E[x₀ | x_t].
# * One step: draw t and ε, jump to $x_t$ in closed form, regress, update. The package's `train` adds
#   warm-up, clipping, EMA, label dropout and the GPU tricks around the same step.
# * The loss is a poor judge of a diffusion model; samples (and the metrics on them, with their intervals)
#   tell: the shipped model's live label accuracy was indistinguishable from its reference table's, and
#   its label accuracy rose from 4,000 to 7,000 training steps.
# * A memorisation probe (distance to the nearest training digit, against held-out real digits) found the
#   shipped model's samples of section 5 no closer to its training set than unseen real digits are.
# * Label dropout trains an unconditional model inside the conditional one, through the null class.
#
# **Next**: notebook 03 turns a trained ε-model into a sampler, the DDPM reverse process.
