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


def test_seed_offset_moves_every_seeded_helper_and_nothing_else(monkeypatch):
    from rlhf_edu.bandit import train_bandit
    from rlhf_edu.core.runtime import numpy_rng, shifted_seed, torch_generator
    from rlhf_edu.core.world import World

    monkeypatch.delenv("RLHF_EDU_SEED_OFFSET", raising=False)
    ref_probs, rewards = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([1.0, 0.0, 2.0])
    before = train_bandit(ref_probs, rewards, beta=0.5, method="reinforce", steps=20).probs
    draws = torch.rand(3, generator=torch_generator(7)), numpy_rng(7).random(3)
    prompts = World(seed=0).prompts(5)
    monkeypatch.setenv("RLHF_EDU_SEED_OFFSET", "1000")
    assert shifted_seed(7) == 1007
    assert not torch.equal(torch.rand(3, generator=torch_generator(7)), draws[0])
    assert not np.array_equal(numpy_rng(7).random(3), draws[1])
    assert not torch.equal(train_bandit(ref_probs, rewards, beta=0.5, method="reinforce", steps=20).probs, before)
    assert World(seed=0).prompts(5) == prompts, "the world is not moved: only the library's own draws are"
    generator = np.random.default_rng(3)
    assert numpy_rng(generator) is generator, "a generator passed in is used as it is"


def test_a_bad_seed_offset_names_the_variable(monkeypatch):
    from rlhf_edu.core.runtime import seed_offset

    monkeypatch.setenv("RLHF_EDU_SEED_OFFSET", "one")
    with pytest.raises(ValueError, match="RLHF_EDU_SEED_OFFSET='one' is not an integer"):
        seed_offset()


def test_the_library_seeds_only_through_the_runtime():
    """Every seed reaches the offset: no module but runtime (and the world, which the offset leaves alone) seeds."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "rlhf_edu"
    raw = re.compile(r"torch\.Generator\(\)|default_rng\(|manual_seed\((?!shifted_seed)|random\.seed\(")
    offenders = [
        f"{path.relative_to(package)}:{number}"
        for path in package.rglob("*.py")
        if path.name not in ("runtime.py", "world.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if raw.search(line)
    ]
    assert not offenders, f"seed through core.runtime (torch_generator, numpy_rng, shifted_seed): {offenders}"
