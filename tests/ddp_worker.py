"""Run by test_training.py under ``torchrun --nproc_per_node=2`` (gloo on CPU).

Each rank trains a tiny model with DDP four times — 6 steps straight; 3 steps into ``<out>/run``; resumed
from there to 6; 6 steps with a cosine decay under a time budget — and writes what it ends with to
``<out>/rank<r>.json``.
"""

import gc
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from diffusion_course.models import MLP
from diffusion_course.schedules import linear_schedule
from diffusion_course.training import TrainConfig, distributed_info, train


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fresh_model() -> MLP:
    # Different initial weights on each rank: DDP must broadcast rank 0's before training starts.
    torch.manual_seed(100 + int(os.environ["RANK"]))
    return MLP(hidden=16, depth=2, time_dim=8, num_classes=4)


def main(out: Path) -> None:
    data_gen = torch.Generator().manual_seed(0)
    points = torch.randn(256, 2, generator=data_gen)
    labels = torch.randint(0, 4, (256,), generator=data_gen)
    schedule = linear_schedule(50)
    config = TrainConfig(steps=6, batch_size=32, lr=1e-2, warmup_steps=2, p_uncond=0.2, seed=3, log_every=2)
    config = config.replace(device="cpu")

    model = fresh_model()
    first_inputs = []
    model.register_forward_pre_hook(lambda module, args: first_inputs.append(args[0].sum().item()))
    full = train(model, points, labels, schedule, config, progress=False)
    train(
        fresh_model(), points, labels, schedule, config.replace(steps=3), out_dir=out / "run", progress=False
    )
    resumed = train(
        fresh_model(), points, labels, schedule, config, out_dir=out / "run", resume=True, progress=False
    )

    # a cosine decay under a time budget reads the clock: the ranks must still take the same lr
    cosine = config.replace(lr_decay="cosine")
    budgeted = train(fresh_model(), points, labels, schedule, cosine, progress=False, time_budget=3600)

    info = distributed_info()
    report = {
        "rank": info.rank,
        "world_size": info.world_size,
        "weights": digest(full.model),
        "ema": digest(full.ema_model),
        "losses": full.losses,
        "resumed_weights": digest(resumed.model),
        "resumed_ema": digest(resumed.ema_model),
        "resumed_losses": resumed.losses,
        "first_input_sum": first_inputs[0],
        "budgeted_weights": digest(budgeted.model),
    }
    (out / f"rank{info.rank}.json").write_text(json.dumps(report))
    gc.collect()  # free the DDP wrappers (reference cycles) while their process group still exists
    torch.distributed.barrier()  # no rank tears gloo down while the other may still be talking to it
    torch.distributed.destroy_process_group()
    (out / f"rank{info.rank}.done").write_text("")
    # A rank once aborted in C++ at interpreter exit ("terminate called without an active exception")
    # after all of the above; everything is written, so leave without running the finalizers.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
