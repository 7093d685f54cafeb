import random

import numpy as np
import pytest
import torch

from rlhf_edu.core.runtime import PRESETS, get_device, get_preset, seed_everything, setup, version_report


def test_device_defaults_to_best_available(monkeypatch):
    monkeypatch.delenv("RLHF_EDU_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert get_device().type == expected


def test_device_from_environment(monkeypatch):
    monkeypatch.setenv("RLHF_EDU_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")


def test_unknown_device_names_the_valid_ones(monkeypatch):
    with pytest.raises(ValueError, match="unknown device 'tpu'.*cuda, mps, cpu"):
        get_device("tpu")
    monkeypatch.setenv("RLHF_EDU_DEVICE", "gpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        get_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_missing_cuda_says_use_cpu():
    with pytest.raises(ValueError, match="CUDA is not available.*'cpu'"):
        get_device("cuda")


def test_presets_by_argument_and_environment(monkeypatch):
    monkeypatch.delenv("RLHF_EDU_PRESET", raising=False)
    assert get_preset().name == "tiny"
    assert get_preset("small") is PRESETS["small"]
    monkeypatch.setenv("RLHF_EDU_PRESET", "small")
    assert get_preset().name == "small"
    assert get_preset(PRESETS["tiny"]).name == "tiny"


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown preset 'huge'.*tiny, small"):
        get_preset("huge")


def test_small_preset_is_bigger_everywhere():
    tiny, small = PRESETS["tiny"], PRESETS["small"]
    for field in ("hidden_size", "num_layers", "num_sft", "num_preference", "num_rl_prompts"):
        assert getattr(small, field) > getattr(tiny, field)
    assert (small.num_sft, small.num_preference, small.num_rl_prompts) == (10_000, 100_000, 100_000)


def test_seed_everything_repeats_all_generators():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    seed_everything(3)
    first = draw()
    seed_everything(3)
    assert draw() == first


def test_version_report_covers_requirements():
    report = version_report()
    assert {package for package, _, _ in report} >= {"torch", "transformers", "datasets"}
    assert all(ok for _, _, ok in report)


def test_setup_returns_device_and_preset(capsys):
    device, preset = setup(seed=1, preset="tiny", device="cpu")
    assert device.type == "cpu" and preset.name == "tiny"
    assert "preset tiny" in capsys.readouterr().out
