"""Issue 23: a noise's name and parameters are spelled out once, by the noise class (the
``NOISES`` registry), and read back from there by the blocks, the run config, the runner and
the report; an ``[eps, r]`` pair becomes a per-block budget in one place."""

import pytest
import torch

from hybridcert.blocks import Continuous, HybridNoise, Tokens, Vocabulary
from hybridcert.blocks.hybrid import pair_budget
from hybridcert.noise import NOISES, Gaussian, Mask, Substitution, noise_from_spec
from hybridcert.runs.config import BlockNoise, ConfigError, RunConfig

VOCAB = Vocabulary(torch.arange(10, 60), mask_id=3)


def test_registry_names_the_three_noises_and_their_kinds():
    assert {name: cls.kind for name, cls in NOISES.items()} == {
        "gaussian": "continuous", "substitution": "discrete", "mask": "discrete"}


@pytest.mark.parametrize("noise", [Gaussian(0.25), Substitution(0.3, 50), Mask(0.7)])
def test_the_stored_description_reads_back_to_the_same_noise(noise):
    block = Continuous("image", noise) if noise.kind == "continuous" else \
        Tokens("text", noise, VOCAB)
    stored = HybridNoise([block]).describe()[0]["noise"]   # what a run stores
    assert noise_from_spec(stored) == noise
    assert BlockNoise.parse("b", noise.spec()) == BlockNoise(noise.name, noise.level)
    assert BlockNoise(noise.name, noise.level).build(50) == noise


def test_hand_written_descriptions_are_unchanged():
    """The stored form of existing runs (read by report and store) is what it was."""
    assert Gaussian(0.5).describe() == {"gaussian": 0.5}
    assert Substitution(0.1, 50).describe() == {"substitution": 0.1, "vocab_size": 50}
    assert Mask(0.3).describe() == {"mask": 0.3}
    with pytest.raises(ValueError, match="names one of"):
        noise_from_spec({"laplace": 1.0})


def test_blocks_ask_the_noise_not_its_class():
    with pytest.raises(ValueError, match="has vocab_size 7 but its vocabulary holds 50"):
        Tokens("text", Substitution(0.3, 7), VOCAB)
    with pytest.raises(ValueError, match="needs a Vocabulary with mask_id"):
        Tokens("text", Mask(0.3), Vocabulary(torch.arange(10, 60)))
    with pytest.raises(ValueError, match="takes Substitution or Mask noise"):
        Tokens("text", Gaussian(0.3), VOCAB)
    with pytest.raises(ValueError, match="takes Gaussian noise"):
        Continuous("image", Mask(0.3))


def test_an_eps_r_pair_is_resolved_once_for_the_config_and_the_noise():
    noise = HybridNoise([Continuous("image", Gaussian(0.5)), Tokens("text", Mask(0.3), VOCAB)])
    assert noise.pair_budget(0.25, 2) == {"image": 0.25, "text": 2}
    config = RunConfig.from_dict({"model": "tests.runs.toy_model:factory", "sigma": 0.5,
                                  "noise": "mask", "keep_prob": 0.3, "mode": "decision",
                                  "targets": [[0.25, 2]]})
    assert config.target_budgets() == [pair_budget(0.25, 2, ["image"], ["text"])]
    two = HybridNoise([Continuous("a", Gaussian(0.5)), Continuous("b", Gaussian(0.5))])
    with pytest.raises(ValueError, match=r"exactly one Gaussian-noised block, there are "
                                         r"\['a', 'b'\]") as direct:
        two.pair_budget(0.25, 0)
    with pytest.raises(ConfigError) as configured:
        RunConfig.from_dict({"model": "tests.runs.toy_model:factory", "keep_prob": 0.3,
                             "blocks": {"a": "gaussian:0.5", "b": "gaussian:0.5"},
                             "mode": "decision", "targets": [[0.25, 0]]})
    assert str(direct.value) in str(configured.value)
