import pytest
import torch

from diffusion_course.profiles import ENV_VAR, get_profile, resolve_device


def test_default_follows_hardware(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    p = get_profile()
    assert p.name == ("full" if torch.cuda.is_available() else "quick")
    assert p.device == resolve_device("auto")


def test_cpu_is_quick_and_env_overrides(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert get_profile(device="cpu").name == "quick"
    monkeypatch.setenv(ENV_VAR, "full")
    p = get_profile(device="cpu")
    assert p.name == "full" and p.is_full and p.pick(quick=1, full=2) == 2
    monkeypatch.setenv(ENV_VAR, "quick")
    assert get_profile(device="cpu").pick(quick=1, full=2) == 1
    assert get_profile("full", device="cpu").name == "full"  # an explicit name wins over the env


def test_bad_profile_names(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "medium")
    with pytest.raises(ValueError, match=f"^{ENV_VAR}='medium'.*'quick', 'full'"):
        get_profile()
    monkeypatch.delenv(ENV_VAR)
    with pytest.raises(ValueError, match="^name='fast'"):
        get_profile("fast")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="^device='gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="^device='cuda'.*not available"):
            resolve_device("cuda")
