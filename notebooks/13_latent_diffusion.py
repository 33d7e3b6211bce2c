# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 13 · Latent diffusion: an autoencoder, diffusion in its latent space, and what that trade buys
#
# Every large image model you will meet (Stable Diffusion, SD3, Flux) runs diffusion not on pixels but on
# the **latents of an autoencoder** (Rombach et al., 2022). The reason is cost: a sampler calls the network
# at every step, and a convolutional network's cost grows with the number of positions it sees. Compress a
# 512×512×3 image to a 64×64×4 latent first and every step gets about 48× fewer numbers; the autoencoder's
# decoder runs once at the end.
#
# The trade has two sides. The latent model can never be better than the autoencoder's reconstructions
# (the **reconstruction floor**), and the latents must be shaped so that a diffusion model can learn them:
# a KL term keeps them close to a Gaussian, and a **scale factor** makes them unit-variance, as the noise
# schedule assumes.
#
# **In this notebook**: the cost of a U-Net step at 28×28×1 and at 7×7×4, measured; the KL autoencoder
# (reparameterisation, KL term), trained briefly live and then the shipped `mnist-vae`; its reconstruction
# floor, scored; the latent space pictured (a projection by class, interpolation in latent vs pixel
# space); the scale factor and what goes wrong without it; the shipped latent diffusion model `mnist-latent`
# against `mnist-cond` at equal steps and equal wall clock; and three exercises.

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

from diffusion_course import get_profile, viz
from diffusion_course.bridge import autoencoder_kl_config, check_diffusers_installed
from diffusion_course.checkpoints import load_checkpoint
from diffusion_course.configs import UNET_LATENT, get_config
from diffusion_course.data import load_mnist
from diffusion_course.exercises.latent import (
    check_kl,
    check_reparameterize,
    check_scale_latents,
    check_unscale_latents,
)
from diffusion_course.generation import generate_samples
from diffusion_course.latent import (
    decode_latents,
    encode_latents,
    measure_scaling_factor,
    reconstruct,
    train_autoencoder,
)
from diffusion_course.models import UNet
from diffusion_course.models.autoencoder import kl_divergence, reparameterize
from diffusion_course.reference_results import estimate, format_table, load_results
from diffusion_course.schedules import linear_schedule
from diffusion_course.scoring import Scorer, compare

P = get_profile()
print(P)

# %% [markdown]
# ## 1. Why latents: the cost of a step grows with the pixels
#
# The same U-Net (the one `mnist-latent` uses: 64 channels, one resolution level, two residual blocks,
# self-attention) run once on a batch of 28×28×1 inputs and once on 7×7×4 inputs. The latent holds 196
# numbers per image against 784, and the convolutions and attention run at 49 positions instead of 784.

# %%
net_pixels = UNet(**{**UNET_LATENT, "in_channels": 1, "image_size": 28}).eval().to(P.device)
net_latent = UNet(**UNET_LATENT).eval().to(P.device)
batch = 16
t_mid, y = torch.full((batch,), 500, device=P.device), torch.arange(batch, device=P.device) % 10
inputs = {"1×28×28": (net_pixels, torch.randn(batch, 1, 28, 28, device=P.device)),
          "4×7×7": (net_latent, torch.randn(batch, 4, 7, 7, device=P.device))}  # fmt: skip


@torch.no_grad()
def forward_seconds(net, x, repeats=3):
    net(x, t_mid, y)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        net(x, t_mid, y)
        times.append(time.perf_counter() - start)
    return min(times)


forward = {k: forward_seconds(*v) for k, v in inputs.items()}
for k, seconds in forward.items():
    print(f"input {k:8s}: {1000 * seconds:7.1f} ms per forward of {batch} (this run)")
print(f"the latent input is {forward['1×28×28'] / forward['4×7×7']:.0f}× faster in this run")

# %%
assert forward["1×28×28"] > 4 * forward["4×7×7"]  # in this run: 16× fewer positions, far cheaper steps

# %% [markdown]
# ## 2. The KL autoencoder
#
# The encoder maps an image $x$ to a diagonal Gaussian $q(z \mid x) = \mathcal N(\mu(x), \operatorname{diag}\sigma^2(x))$
# on a 4×7×7 latent (two stride-2 convolutions: a downsampling factor of 4); the decoder maps a latent back
# to pixels. Training draws $z$ from $q$ with the **reparameterisation** trick, so that the gradient reaches
# μ and σ through a deterministic function of fresh noise:
#
# $$z = \mu + \sigma \odot \varepsilon, \qquad \sigma = \exp(\tfrac12 \log \sigma^2), \qquad \varepsilon \sim \mathcal N(0, I),$$
#
# and minimises a reconstruction error plus a small multiple β of the KL divergence to the prior
# $\mathcal N(0, I)$, which has a closed form for Gaussians:
#
# $$L = \sum_{\text{pixels}} (\hat x - x)^2 + \beta\,\mathrm{KL}, \qquad
#   \mathrm{KL}\big(q(z\mid x)\,\|\,\mathcal N(0, I)\big) = \tfrac12 \sum_j \big(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\big).$$
#
# Our choices: **4×7×7** keeps a quarter of the numbers (Stable Diffusion's f = 8, 4-channel latent keeps
# 1/48 of a 3-channel image; a 28×28 digit has less to spare) and 7×7 is the resolution `mnist-cond` already
# reasons at. **β = 10⁻³** keeps reconstructions sharp (section 3 scores them) while the posterior keeps a
# spread of its own (section 5 measures it), so that a latent a little off the data still decodes to a digit.
# A first check of the two equations against the package, on random numbers:

# %%
g = torch.Generator().manual_seed(0)
mu, logvar, eps = torch.randn(3, 4, 7, 7, generator=g), torch.randn(3, 4, 7, 7, generator=g), None
noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1))
z_by_hand = mu + torch.exp(0.5 * logvar) * noise
kl_by_hand = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)
print("KL per sample by hand:", [f"{v:.2f}" for v in kl_by_hand.tolist()])

# %%
assert torch.allclose(z_by_hand, reparameterize(mu, logvar, torch.Generator().manual_seed(1)))
assert torch.allclose(kl_by_hand, kl_divergence(mu, logvar))

# %% [markdown]
# ### Training it briefly, live
#
# The course's trainer for the autoencoder, `train_autoencoder`, on the 4,500 training digits with the
# shipped run's settings (`mnist-vae`), but only a few hundred steps here (the shipped model had 3,000).

# %%
train_images, train_labels = load_mnist("train")
heldout, heldout_labels = load_mnist("heldout")
run = get_config("mnist-vae")
live_steps = P.pick(quick=150, full=1500)
live = run.build_model()
started = time.perf_counter()
result = train_autoencoder(live, train_images, run.train.replace(steps=live_steps, device=str(P.device)),
                           kl_weight=run.extra["kl_weight"], progress=False)  # fmt: skip
print(f"{live_steps} steps in {time.perf_counter() - started:.0f} s (this run); "
      f"loss {sum(result.losses[:10]) / 10:.1f} → {sum(result.losses[-10:]) / 10:.1f}")  # fmt: skip

vae = load_checkpoint("mnist-vae", device=P.device).model
show = heldout[:10]
fig, axes = plt.subplots(3, 1, figsize=(9, 4.2))
viz.show_images(show, nrow=10, ax=axes[0], title="held-out digits")
viz.show_images(reconstruct(live.cpu(), show).clamp(-1, 1), nrow=10, ax=axes[1],
                title=f"reconstructed after {live_steps} steps (live)")  # fmt: skip
viz.show_images(reconstruct(vae.cpu(), show).clamp(-1, 1), nrow=10, ax=axes[2],
                title="reconstructed by the shipped mnist-vae (3,000 steps)")  # fmt: skip
fig.tight_layout()
plt.show()
vae = vae.to(P.device)

# %%
assert sum(result.losses[-10:]) < 0.5 * sum(result.losses[:10])  # the live run learned, in this run

# %% [markdown]
# ### Exercise 1: the reparameterised sample and the KL term
#
# Write `my_reparameterize(mean, logvar, noise)` (z = μ + σ ⊙ ε, with ε given) and `my_kl(mean, logvar)`
# (one KL value per sample, summed over all latent entries).


# %%
def my_reparameterize(mean, logvar, noise):
    """z = μ + exp(½ log σ²) ⊙ ε."""
    # BEGIN SOLUTION
    return mean + torch.exp(0.5 * logvar) * noise
    # END SOLUTION


def my_kl(mean, logvar):
    """½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²) per sample: shape (B,)."""
    # BEGIN SOLUTION
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)
    # END SOLUTION


# %%
result = check_reparameterize(my_reparameterize)
assert result.passed, result  # solution-only
result

# %%
result = check_kl(my_kl)
assert result.passed, result  # solution-only
result

# %% [markdown]
# ## 3. The reconstruction floor
#
# A latent model generates latents; the decoder turns them into digits. Even a perfect latent model would
# produce, at best, what the decoder makes of real latents: the reconstructions decode(μ(x)). Scoring the
# reconstructions of the 500 held-out digits (which neither model trained on) with the course's scorer
# gives that floor; the real digits themselves, scored the same way, are the floor of any model.

# %%
scorer = Scorer(device=P.device)
recon = reconstruct(vae, heldout)
recon_scores = scorer.score(recon, heldout_labels)
real_floor = scorer.floor(len(heldout))
mse = (recon - heldout).pow(2).mean().item()
print(f"reconstructions of the {len(heldout)} held-out digits: {recon_scores}")
print(f"real training digits, same n:                   {real_floor}")
print(f"mean squared error per pixel: {mse:.4f}; recorded when it was shipped: "
      f"{vae_info_mse if (vae_info_mse := load_checkpoint('mnist-vae').info['metrics']['heldout_mse_per_pixel']) else None:.4f}")  # fmt: skip

# %%
assert recon_scores.label_accuracy.value >= 0.95  # the target: the classifier reads 95 % of them
assert abs(mse - vae_info_mse) < 1e-6  # the shipped figure, re-measured
assert compare(recon_scores.kid, real_floor.kid).verdict == "indistinguishable"

# %% [markdown]
# ## 4. The latent space, pictured
#
# Each held-out digit's latent mean μ(x) has 196 numbers. Projected on its two principal directions,
# coloured by the digit's class:

# %%
latents = encode_latents(vae, heldout, scale=False)
flat = latents.flatten(1)
centred = flat - flat.mean(0)
_, _, v = torch.linalg.svd(centred, full_matrices=False)
xy = centred @ v[:2].T
fig, ax = plt.subplots(figsize=(5.5, 4.5))
points = ax.scatter(xy[:, 0], xy[:, 1], c=heldout_labels, cmap="tab10", s=8)
fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
ax.set_title("held-out latents μ(x), first two principal components")
plt.show()

# %% [markdown]
# Classes form overlapping clouds: two of 196 directions cannot separate ten digits, but they already
# order them (the 1s, thin and upright, sit apart). More telling is what lies *between* two latents.
# Below, a held-out 1 and a held-out 7 are blended in pixel space, (1−α)·x_a + α·x_b, and in latent
# space, decode((1−α)·μ_a + α·μ_b):

# %%
a, b = int((heldout_labels == 1).nonzero()[0]), int((heldout_labels == 7).nonzero()[0])
alphas = torch.linspace(0, 1, 7)
pixel_path = torch.stack([(1 - w) * heldout[a] + w * heldout[b] for w in alphas])
latent_path = decode_latents(vae, torch.stack([(1 - w) * latents[a] + w * latents[b] for w in alphas]).to(P.device),
                             scaled=False)  # fmt: skip
fig, axes = plt.subplots(2, 1, figsize=(8, 3))
viz.show_images(pixel_path, nrow=7, ax=axes[0], title="pixel space: a cross-fade")
viz.show_images(latent_path.clamp(-1, 1), nrow=7, ax=axes[1], title="latent space, decoded")
fig.tight_layout()
plt.show()


def grey_fraction(x):
    """Fraction of pixels that are neither background nor ink: |x| < 0.5 on the [−1, 1] scale."""
    return (x.abs() < 0.5).float().flatten(1).mean(1)


mid = len(alphas) // 2
print(f"half-tone pixels at the midpoint: pixel blend {grey_fraction(pixel_path)[mid]:.3f}, "
      f"latent blend {grey_fraction(latent_path)[mid]:.3f}; at the two ends "
      f"{grey_fraction(pixel_path)[0]:.3f} and {grey_fraction(pixel_path)[-1]:.3f} (this run)")  # fmt: skip

# %%
assert grey_fraction(latent_path)[mid] < grey_fraction(pixel_path)[mid]  # in this run

# %% [markdown]
# The pixel blend is a double exposure: two half-bright digits on top of each other, with more half-tone
# pixels at the midpoint than the latent blend. The decoder turns every point of the latent path into
# strokes of full ink, so the latent blend bends one digit into the other.
#
# ## 5. The scale factor, and what goes wrong without it
#
# The noise schedule was designed for data of unit variance: at index t the signal-to-noise ratio is
# SNR_t = ᾱ_t / (1 − ᾱ_t) only if the data has variance 1; for data of standard deviation σ_data it is
# σ_data² · ᾱ_t / (1 − ᾱ_t). Latent diffusion therefore multiplies latents by
#
# $$s = 1 / \operatorname{std}(z), \qquad z \sim q(z \mid x) \text{ over the training set},$$
#
# Stable Diffusion's `vae.config.scaling_factor` (0.18215 for SD 1.x, whose latents have a standard
# deviation near 5.5). It is measured after the autoencoder is trained and stored in its checkpoint;
# `encode_latents` multiplies by it and `decode_latents` divides by it. Ours, measured again here:

# %%
s = vae.scaling_factor
s_again = measure_scaling_factor(vae, train_images.to(P.device), seed=run.train.seed)
scaled = encode_latents(vae, train_images)
with torch.no_grad():
    posterior_sigma = vae.encode(train_images[:500].to(P.device))[1].mul(0.5).exp().mean().item()
mean_std = encode_latents(vae, train_images, scale=False).std().item()
print(f"stored s = {s:.4f}; measured again: {s_again:.4f}")
print(f"std of μ(x) over the data: {mean_std:.3f}; of s·μ(x): {scaled.std():.3f}; "
      f"mean posterior σ(x): {posterior_sigma:.3f}")  # fmt: skip

# %%
assert abs(s_again - s) < 1e-3 * s  # the stored factor is what the data gives (same seed; device rounding)
assert abs(scaled.std().item() - 1) < 0.05  # the diffusion model sees (almost) unit-variance data
assert 0.01 < posterior_sigma < 0.2 * mean_std  # q(z|x) is narrow against the data's spread, not a point

# %% [markdown]
# Our autoencoder's latents came out with a spread near 1 (s ≈ 1.2), so forgetting s would cost us little.
# Stable Diffusion's did not: unscaled, its latents would have σ_data ≈ 5.5, and every step of the schedule
# would see 30× the SNR it was designed for. The schedule's noisiest steps stop being noisy:

# %%
schedule = linear_schedule(1000)
snr = schedule.alpha_bar / (1 - schedule.alpha_bar)
fig, ax = plt.subplots(figsize=(6, 3.5))
for sd, name in ((1.0, "unit variance (scaled)"), (1 / s, "ours unscaled"), (1 / 0.18215, "SD 1.x unscaled")):
    ax.semilogy((sd**2 * snr).numpy(), label=f"σ_data = {sd:.2f}: {name}")
ax.axhline(1.0, color="grey", lw=0.5)
ax.set_xlabel("index t")
ax.set_ylabel("SNR the model sees")
ax.legend()
plt.show()
half = {sd: int((sd**2 * snr < 1).nonzero()[0]) for sd in (1.0, 1 / 0.18215)}
print(f"first index with SNR < 1: {half[1.0]} at unit variance, {half[1 / 0.18215]} for SD's unscaled latents")
print(f"SNR at the last index T−1: {snr[-1]:.1e} scaled, {snr[-1] / 0.18215**2:.1e} unscaled (SD)")

# %%
assert half[1 / 0.18215] > half[1.0] + 150  # a large stretch of the schedule loses its noisy regime

# %% [markdown]
# The other half of the convention is the decoder's: the latent model generates *scaled* latents, which
# must be divided by s before decoding. Below, samples of our shipped latent model (DDIM, 20 steps, labels
# 0…9 in turn; `decode=False` returns the scaled latents z̃) decoded three ways: right, with s forgotten,
# and multiplied by Stable Diffusion 1.x's factor 0.18215 instead of divided by ours (a factor borrowed from
# another autoencoder, as when SD 1.x's 0.18215 and SDXL's 0.13025 get mixed up, is the classic form of
# this slip).

# %%
latent_model = load_checkpoint("mnist-latent", device=P.device)
n_live = P.pick(quick=100, full=500)
z_samples, labels = generate_samples(latent_model, "ddim", 20, n=n_live, seed=0, decode=False)
decoded = {
    "decode(z̃ / s)": decode_latents(vae, z_samples),
    "decode(z̃): s forgotten": decode_latents(vae, z_samples, scaled=False),
    "decode(0.18215 · z̃): SD 1.x's s": decode_latents(vae, 0.18215 * z_samples, scaled=False),
}
decoded_scores = {name: scorer.score(x, labels) for name, x in decoded.items()}
for name, scores in decoded_scores.items():
    print(f"{name:34s} {scores.label_accuracy}; {scores.kid}")
right, right_scores = decoded["decode(z̃ / s)"], decoded_scores["decode(z̃ / s)"]
verdicts = {name: compare(right_scores.label_accuracy, scores.label_accuracy)
            for name, scores in list(decoded_scores.items())[1:]}  # fmt: skip
for name, verdict in verdicts.items():
    print(f"right (A) vs {name} (B): {verdict.verdict}")
fig, axes = plt.subplots(3, 1, figsize=(9, 4.4))
for ax, (name, x) in zip(axes, decoded.items()):
    viz.show_images(x[:10].clamp(-1, 1), nrow=10, ax=ax, title=name)
fig.tight_layout()
plt.show()

# %% [markdown]
# With our s ≈ 1.2, forgetting it is a mild slip: the two label accuracies are indistinguishable at this n,
# and the digits look alike. Shrinking the latents 5× with a borrowed factor feeds the decoder latents far
# from anything it was trained on, and the classifier reads fewer of the digits: the intervals separate.

# %%
assert verdicts["decode(z̃): s forgotten"].verdict == "indistinguishable"
assert verdicts["decode(0.18215 · z̃): SD 1.x's s"].verdict == "A better"

# %% [markdown]
# ### Exercise 2: scaling latents
#
# Write `my_scale(mean, s)`, the diffusion data from the encoder's mean, and `my_unscale(latents, s)`, what
# the decoder must receive from a sampled latent.


# %%
def my_scale(mean, s):
    """The latent diffusion model's data: s · μ."""
    # BEGIN SOLUTION
    return s * mean
    # END SOLUTION


def my_unscale(latents, s):
    """What goes into the decoder: z̃ / s."""
    # BEGIN SOLUTION
    return latents / s
    # END SOLUTION


# %%
result = check_scale_latents(my_scale)
assert result.passed, result  # solution-only
result

# %%
result = check_unscale_latents(my_unscale)
assert result.passed, result  # solution-only
result

# %% [markdown]
# ## 6. Latent diffusion against pixel diffusion
#
# `mnist-latent` is the same kind of class-conditional ε-model as `mnist-cond`, trained by the same trainer
# (label dropout 0.1, so guidance works), on s·μ(x) of the 4,500 training digits. Every sampler applies
# unchanged; `generate_samples` decodes at the end. Its samples from the cell above, scored:

# %%
viz.show_images(right[:20].clamp(-1, 1), nrow=10, labels=[str(int(k)) for k in labels[:20]],
                title="mnist-latent: DDIM, 20 steps, decoded (the first 20)")  # fmt: skip
print(f"this run, n = {n_live}: {right_scores.label_accuracy}; {right_scores.kid}")

# %% [markdown]
# A fair comparison needs big n and both an equal number of steps and an equal wall clock. The shipped
# reference table `latent-vs-pixel` samples both models with DDIM at 10, 20 and 50 steps, n = 500 per cell
# from the same seeds:

# %%
table = load_results("latent-vs-pixel")
print(f"reference run: {table['command']}")
for metric in ("label_accuracy", "kid"):
    print(format_table(table, metric))
    print()
at_equal_steps = {}
for steps in (10, 20, 50):
    col = f"S = {steps}"
    at_equal_steps[steps] = {m: compare(estimate(table, "latents (mnist-latent)", col, m),
                                        estimate(table, "pixels (mnist-cond)", col, m))
                             for m in ("label_accuracy", "kid")}  # fmt: skip
    print(f"{col}, latents (A) vs pixels (B):", "; ".join(str(c) for c in at_equal_steps[steps].values()))

# %% [markdown]
# Equal wall clock: the cost of a latent sample per step, against a pixel sample, measured now on the same
# batch (the decoder included, as it is in every latent sample); `benchmarks/bench_latent.py` measures
# the same on more samples and rounds.

# %%
pixel_model = load_checkpoint("mnist-cond", device=P.device)


def seconds_per_sample(checkpoint, steps=10, n=20):
    start = time.perf_counter()
    generate_samples(checkpoint, "ddim", steps, n=n, seed=0)
    return (time.perf_counter() - start) / n


generate_samples(latent_model, "ddim", 1, n=2)  # warm-up
cost = {"latent": seconds_per_sample(latent_model), "pixel": seconds_per_sample(pixel_model)}
ratio = cost["latent"] / cost["pixel"]
print(f"DDIM-10 per sample: latent {1000 * cost['latent']:.1f} ms, pixel {1000 * cost['pixel']:.1f} ms: "
      f"ratio {ratio:.2f} (this run)")  # fmt: skip
equal_time = {m: compare(estimate(table, "latents (mnist-latent)", "S = 50", m),
                         estimate(table, "pixels (mnist-cond)", "S = 20", m))
              for m in ("label_accuracy", "kid")}  # fmt: skip
print(f"latent DDIM-50 (≈ {50 * ratio:.0f} pixel-step equivalents in this run) (A) vs pixel DDIM-20 (B):")
for c in equal_time.values():
    print("  ", c)

# %%
assert ratio < 1.0  # in this run a latent sample costs less than a pixel sample at equal steps

# %% [markdown]
# ## 7. The same autoencoder in diffusers' terms
#
# diffusers' `AutoencoderKL` is the class Stable Diffusion's VAE is loaded into. `autoencoder_kl_config`
# gives the configuration closest to ours and says, in words, what still differs; the configured class is
# built here (no download) and checked to map a digit to a latent of our shape.

# %%
HAVE_DIFFUSERS = check_diffusers_installed()
if HAVE_DIFFUSERS:
    from diffusers import AutoencoderKL

    kl_config, differences = autoencoder_kl_config(vae)
    theirs = AutoencoderKL(**kl_config)
    with torch.no_grad():
        their_latent = theirs.encode(heldout[:2]).latent_dist.mean
    print("AutoencoderKL(" + ", ".join(f"{k}={v!r}" for k, v in kl_config.items()) + ")")
    print(f"their latent: {tuple(their_latent.shape)}, ours: {tuple(latents[:2].shape)}; "
          f"parameters: theirs {sum(p.numel() for p in theirs.parameters()):,}, "
          f"ours {sum(p.numel() for p in vae.parameters()):,}")  # fmt: skip
    print("What does not map:")
    for line in differences:
        print(" -", line)

# %%
if HAVE_DIFFUSERS:
    assert their_latent.shape == latents[:2].shape and kl_config["scaling_factor"] == vae.scaling_factor

# %% [markdown]
# Both libraries keep s outside the network: a diffusers pipeline multiplies `latent_dist.sample()` by
# `vae.config.scaling_factor` before diffusion and divides by it before `vae.decode`, exactly where
# `encode_latents` and `decode_latents` do (we encode the mean μ, diffusers' `latent_dist.mode()`).
#
# ## Exercise 3 (open): a latent guidance sweep
#
# Guidance needs nothing new: `generate_samples(latent_model, "ddim", 20, n=100, guidance=3.0)`. Sweep s
# over 1, 2, 3, 5 and score each with `scorer.score`. Does guidance buy label accuracy on latents as it did
# on pixels in notebook 07 — and do the intervals let you say so?

# %% [markdown]
# ## Summary
#
# * The same U-Net costs many times less per forward on a 4×7×7 latent than on a 28×28×1 image (the ratio
#   is printed in section 1), and a latent DDIM sample, decoder included, cost less than a pixel one at
#   equal steps in this run.
# * The KL autoencoder is an encoder to a Gaussian q(z|x), the reparameterised sample z = μ + σε and a
#   closed-form KL term; a brief live run already reconstructs digits, and the shipped `mnist-vae`'s
#   reconstructions of held-out digits are read correctly by the classifier at least 95 % of the time:
#   the floor under any latent model.
# * Blending two digits in latent space gave fewer half-tone pixels at the midpoint than a pixel
#   cross-fade.
# * The scale factor s = 1/std(z) makes the diffusion data unit-variance. Ours is near 1, so forgetting
#   it changed little; another model's factor broke the decoded digits.
# * `mnist-latent` is an ordinary ε-model on scaled latents: every sampler and guidance apply unchanged.
#   The shipped reference table compares it with `mnist-cond` at 10, 20 and 50 steps; a ranking is read
#   from it only where `compare` separates the intervals.
