"""Device placement without a GPU: samplers, guidance and the trainer on a simulated accelerator.

A tensor created inside a loop without ``device=`` lands on the CPU. On a machine without CUDA every tensor
is on the CPU, so such a slip passes every other test and fails only on the GPU server. Here the tensors
that should live on the accelerator are :class:`OnDevice` wrappers that report ``device == meta`` but hold
real CPU data, and :class:`SimulatedAccelerator` (a ``TorchDispatchMode``) sees every aten op:

* an op that mixes accelerator tensors with CPU tensors of one or more dimensions raises
  :class:`DeviceMixError` (CUDA accepts 0-dim CPU tensors as scalars, so this does too);
* ``device=meta`` in a factory or ``.to(...)`` makes an accelerator tensor, ``.to("cpu")`` leaves it;
* :class:`GeneratorCheck` (a ``TorchFunctionMode``) fails a random function whose generator lives on another
  device than its output, as CUDA does; :class:`DeviceGenerator` is ``torch.Generator(device="meta")``.

The trainer also needs ``torch.Generator(device=...)`` and ``torch.autocast(device_type)`` for its device,
which refuse ``meta``; its test patches both for the duration of the test.

Because the data is real, values can be compared with a plain CPU run: the same seed must give the same
samples and the same trained weights "on any device" (docs/ARCHITECTURE.md). The plain ``meta`` device
alone cannot do this: samplers read values (``isfinite(eps).all()``, ``int(labels.min())``).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from diffusion_course.configs import get_config
from diffusion_course.models import TinyUNet
from diffusion_course.sampling import CFG
from diffusion_course.sampling.registry import SAMPLERS, run_sampler
from diffusion_course.schedules import linear_schedule
from diffusion_course.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICE = torch.device("meta")
# Ops that move data between devices by design.
TRANSFERS = (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default)
# Options that take each sampler through its noise-drawing / clipping / multistep branches; a sampler not
# listed here (a newly registered one) runs with its defaults, so it is covered without editing this file.
SAMPLER_CASES = {
    "ddpm": [{}, {"variance": "beta", "clip_x0": True}],
    "ddim": [{"eta": 0.0}, {"eta": 0.7, "clip_x0": True}],
    "unipc": [{"order": 3}, {"order": 2, "corrector": False}],
}


class DeviceMixError(RuntimeError):
    """An op got accelerator tensors and CPU tensors (or a generator on the wrong device)."""


class OnDevice(torch.Tensor):
    """A tensor 'on the accelerator': reports ``device == meta``, holds its values in ``self.elem`` (CPU)."""

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device=DEVICE, requires_grad=elem.requires_grad,
        )  # fmt: skip
        out.elem = elem
        return out

    def __repr__(self) -> str:
        return f"OnDevice({self.elem!r})"

    def tolist(self):
        return self.elem.tolist()  # as CUDA tensors do (it copies to the host)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func} ran on an OnDevice tensor outside SimulatedAccelerator")


BaseGenerator = torch.Generator  # the real class (the trainer test patches torch.Generator)


class DeviceGenerator(BaseGenerator):
    """``torch.Generator(device="meta")``: a CPU generator underneath that reports the accelerator."""

    def __new__(cls, device="cpu"):
        on_device = torch.device(device).type == DEVICE.type
        gen = super().__new__(cls, "cpu" if on_device else device)
        gen.on_device = on_device
        return gen

    def __init__(self, device="cpu"):
        pass  # everything happened in __new__ (torch.Generator has no Python __init__ to call)

    @property
    def device(self) -> torch.device:
        return DEVICE if self.on_device else BaseGenerator.device.__get__(self)


def _generator_device(gen) -> str:
    return DEVICE.type if getattr(gen, "on_device", False) else gen.device.type


class GeneratorCheck(TorchFunctionMode):
    """Fails when a random function draws with a generator on another device than its output, as CUDA does.

    This runs at the Python level (``__torch_function__``): below it the generator's Python object, and with
    it whether it is a :class:`DeviceGenerator`, is gone.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # top-level arguments only: deep structures (deepcopy's memo, say) hold no generator to draw with
        top = [*args, *kwargs.values()]
        gens = [x for x in top if isinstance(x, BaseGenerator)]
        if gens:
            if kwargs.get("device") is not None:
                out_type = torch.device(kwargs["device"]).type
            else:
                tensors = [x for x in top if isinstance(x, torch.Tensor)]
                out_type = tensors[0].device.type if tensors else "cpu"
            for gen in gens:
                if _generator_device(gen) != out_type:
                    raise DeviceMixError(
                        f"{getattr(func, '__name__', func)}: generator on {_generator_device(gen)!r} draws a "
                        f"tensor on {out_type!r}; use a generator on {out_type!r} or draw on the generator's "
                        "device and move the result"
                    )
        return func(*args, **kwargs)


class SimulatedAccelerator(TorchDispatchMode):
    """Runs every op on the CPU data of its arguments and fails on device mixing (see the module docstring).

    ``ops`` counts the ops seen and ``device_ops`` those that ran on accelerator tensors, so a test can show
    that the work it checks really happened on the simulated device.
    """

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.device_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        on_device, on_cpu, wrappers, plain = [], [], {}, {}

        def unwrap(x):
            if isinstance(x, OnDevice):
                on_device.append(x)
                wrappers[id(x.elem)] = x
                return x.elem
            if isinstance(x, torch.Tensor):
                if x.device.type == DEVICE.type:
                    raise DeviceMixError(f"{func}: a data-less meta tensor reached the simulated device")
                on_cpu.append(x)
                plain[id(x)] = x
            return x

        args, kwargs = tree_map(unwrap, args), tree_map(unwrap, dict(kwargs or {}))
        target = kwargs.get("device")
        target = None if target is None else torch.device(target).type
        if target == DEVICE.type:
            kwargs["device"] = torch.device("cpu")
        out_type = target or (DEVICE.type if on_device else "cpu")
        mixed = [tuple(t.shape) for t in on_cpu if t.dim() > 0]
        if on_device and mixed and func not in TRANSFERS:
            raise DeviceMixError(
                f"{func}: tensors on the accelerator mixed with CPU tensors of shapes {mixed} "
                "(a tensor made without device=... lands on the CPU)"
            )
        if on_device or target == DEVICE.type:
            self.device_ops += 1
        result = func(*args, **kwargs)

        def wrap(x):
            if not isinstance(x, torch.Tensor):
                return x
            if id(x) in wrappers:  # in-place and out= ops return their argument
                return wrappers[id(x)]
            if id(x) in plain:
                return plain[id(x)]
            return OnDevice(x) if out_type == DEVICE.type else x

        return tree_map(wrap, result)


@contextlib.contextmanager
def simulated_accelerator(monkeypatch=None):
    """The simulated device; with ``monkeypatch`` also ``torch.Generator(device="meta")`` and a disabled
    ``torch.autocast("meta")`` (both refuse the meta device type outright, so the trainer needs them)."""
    if monkeypatch is not None:
        real_autocast = torch.autocast

        def autocast(device_type, *args, enabled=True, **kwargs):
            if device_type == DEVICE.type:
                assert not enabled, "the simulated accelerator has no autocast"
                return contextlib.nullcontext()
            return real_autocast(device_type, *args, enabled=enabled, **kwargs)

        monkeypatch.setattr(torch, "Generator", DeviceGenerator)
        monkeypatch.setattr(torch, "autocast", autocast)
    with GeneratorCheck(), SimulatedAccelerator() as mode:
        yield mode


def host(x: torch.Tensor) -> torch.Tensor:
    """The CPU values of a simulated-device tensor (or of a CPU tensor)."""
    return x.elem if isinstance(x, OnDevice) else x


def to_device(x: torch.Tensor) -> OnDevice:
    return OnDevice(x.detach().clone())


@pytest.fixture(scope="module")
def cond_model():
    torch.manual_seed(0)
    return get_config("test-tiny-cond").build_model().eval()


def device_copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    dev = copy.deepcopy(model)
    with simulated_accelerator():
        dev.to(DEVICE)
    assert all(isinstance(p, OnDevice) for p in dev.parameters())
    return dev


# ------------------------------------------------------------------------------------- the harness itself


def _sloppy_accumulate(x: torch.Tensor, steps: int) -> torch.Tensor:
    """The slip this file exists to catch: a tensor made in a loop without ``device=``."""
    total = x
    for _ in range(steps):
        total = total + torch.zeros(x.shape[1])
    return total


def _careful_accumulate(x: torch.Tensor, steps: int) -> torch.Tensor:
    total = x
    for _ in range(steps):
        total = total + torch.zeros(x.shape[1], device=x.device)
    return total


def test_a_tensor_made_without_device_in_a_loop_is_caught():
    x = torch.randn(3, 4)
    assert torch.equal(_sloppy_accumulate(x, 2), x)  # on the CPU the slip is invisible
    with simulated_accelerator() as mode:
        x_dev = to_device(x)
        assert torch.equal(host(_careful_accumulate(x_dev, 2)), x)
        with pytest.raises(DeviceMixError, match=r"aten\.add.*shapes \[\(4,\)\]"):
            _sloppy_accumulate(x_dev, 2)
    assert mode.device_ops >= 2


def test_generator_on_the_wrong_device_and_unmoved_noise_are_caught():
    cpu_gen = torch.Generator().manual_seed(0)
    with simulated_accelerator():
        x = to_device(torch.zeros(2, 3))
        with pytest.raises(DeviceMixError, match="generator on 'cpu'"):
            torch.randn(x.shape, generator=cpu_gen, device=x.device)
        with pytest.raises(DeviceMixError, match="mixed with CPU tensors"):
            x + torch.randn(x.shape, generator=cpu_gen)  # drawn on the CPU and never moved
        moved = x + torch.randn(x.shape, generator=cpu_gen).to(x.device)  # the course's pattern
        assert isinstance(moved, OnDevice) and moved.device == DEVICE
        scalar = x * torch.tensor(2.0)  # a 0-dim CPU tensor is a scalar, on CUDA too
        assert isinstance(scalar, OnDevice)
        assert isinstance(x.cpu(), torch.Tensor) and not isinstance(x.cpu(), OnDevice)


def test_a_model_that_builds_its_embedding_on_the_cpu_is_caught(cond_model):
    class SloppyEmbedding(torch.nn.Module):
        num_classes = None

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, x, t):
            ramp = torch.arange(x.shape[-1], dtype=x.dtype)  # no device=: the slip inside a model
            return self.scale * x * 0 + ramp

    schedule = linear_schedule(20)
    model = device_copy(SloppyEmbedding())
    with simulated_accelerator():
        x_T = to_device(torch.randn(2, 1, 4, 4))
        with pytest.raises((DeviceMixError, ValueError), match="mixed with CPU tensors"):
            run_sampler("ddim", model, x_T, schedule, steps=3)


def test_a_sampler_that_forgets_to_move_its_noise_is_caught(cond_model, monkeypatch):
    """The real DDPM loop with ``draw_noise`` replaced by a version that leaves z on the CPU."""
    import diffusion_course.sampling.ddpm as ddpm

    def noise_left_on_cpu(like, generator=None):
        return torch.randn(like.shape, generator=generator, dtype=like.dtype)  # no .to(like.device)

    monkeypatch.setattr(ddpm, "draw_noise", noise_left_on_cpu)
    schedule = linear_schedule(50)
    x_T = torch.randn(1, 1, 28, 28)
    model = device_copy(cond_model)
    run_sampler("ddpm", cond_model, x_T, schedule, steps=3, generator=torch.Generator().manual_seed(0))
    with simulated_accelerator(), pytest.raises(DeviceMixError, match="mixed with CPU tensors"):
        run_sampler(
            "ddpm", model, to_device(x_T), schedule, steps=3, generator=torch.Generator().manual_seed(0)
        )


# ------------------------------------------------------------------------------------- the package


@pytest.mark.parametrize("generator_on", ["cpu", "device", "none"])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_stays_on_the_device_and_matches_the_cpu(name, generator_on, cond_model):
    """Each registered sampler on the simulated device gives bitwise the CPU result for the same seed."""
    schedule = linear_schedule(50)
    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([3, 7])
    model = device_copy(cond_model)

    def make_gen(device):
        if generator_on == "none":
            torch.manual_seed(5)
            return None
        return DeviceGenerator(device).manual_seed(5)

    for options in SAMPLER_CASES.get(name, [{}]):
        run = dict(steps=4, labels=labels, **options)
        expected = run_sampler(name, cond_model, x_T, schedule, generator=make_gen("cpu"), **run)
        gen_device = DEVICE if generator_on == "device" else "cpu"
        with simulated_accelerator() as mode:
            got, traj = run_sampler(
                name, model, to_device(x_T), schedule, generator=make_gen(gen_device),
                return_trajectory=True, **run,
            )  # fmt: skip
        assert isinstance(got, OnDevice), f"{name} {options}: the result left the device"
        assert all(isinstance(x, OnDevice) for x in [*traj.xs, *traj.x0_preds])
        assert mode.device_ops > 50  # the network really ran on the device
        torch.testing.assert_close(host(got), expected, rtol=0, atol=0, msg=f"{name} {options}")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_guided_sampling_stays_on_the_device(name, cond_model):
    schedule = linear_schedule(50)
    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([1, 8])
    expected = run_sampler(
        name, CFG(cond_model, 3.0, rescale=0.5), x_T, schedule, steps=3, labels=labels,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    guided = CFG(device_copy(cond_model), 3.0, rescale=0.5)
    with simulated_accelerator():
        got = run_sampler(
            name, guided, to_device(x_T), schedule, steps=3, labels=labels,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        direct = guided(to_device(x_T), 10, labels.to(DEVICE))  # int t and device labels
        from_tensor_t = guided(to_device(x_T), torch.tensor(10), labels)  # 0-dim CPU t, CPU labels
    assert isinstance(got, OnDevice) and isinstance(direct, OnDevice)
    torch.testing.assert_close(host(got), expected, rtol=0, atol=0)
    torch.testing.assert_close(host(direct), host(from_tensor_t), rtol=0, atol=0)


@pytest.mark.parametrize("conditional", [False, True])
def test_trainer_steps_stay_on_the_device_and_match_the_cpu(conditional, monkeypatch):
    """``train`` on the simulated device (its own loop, loss, clipping, AdamW, EMA) ends with the CPU's
    weights and losses for the same seed."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(12, 1, 28, 28, generator=gen) * 2 - 1
    labels = torch.randint(0, 10, (12,), generator=gen) if conditional else None
    schedule = linear_schedule(100)
    config = TrainConfig(steps=2, batch_size=3, warmup_steps=1, log_every=1, seed=7,
                         p_uncond=0.3 if conditional else 0.0)  # fmt: skip

    def build():
        torch.manual_seed(0)
        if conditional:
            return get_config("test-tiny-cond").build_model()
        return TinyUNet(base_channels=8, time_dim=16)

    expected = train(build(), images, labels, schedule, config.replace(device="cpu"), progress=False)
    with simulated_accelerator(monkeypatch) as mode:
        got = train(build(), images, labels, schedule, config.replace(device="meta"), progress=False)
    assert got.device == "meta" and mode.device_ops > 100
    assert all(isinstance(p, OnDevice) for p in [*got.model.parameters(), *got.ema_model.parameters()])
    assert got.losses == expected.losses
    for got_model, expected_model in [(got.model, expected.model), (got.ema_model, expected.ema_model)]:
        expected_params = dict(expected_model.named_parameters())
        for name, param in got_model.named_parameters():
            torch.testing.assert_close(host(param), expected_params[name].detach(), rtol=0, atol=0, msg=name)
