"""The joint attack finds a substitution that flips a model, on the base model and through
the noise (the changed position scored while it shows the new token), and respects the
positions the threat allows."""

import pytest
import torch

from hybridcert.attacks import joint_attack, true_class_probability
from hybridcert.blocks import Continuous, HybridNoise, Tokens, Vocabulary
from hybridcert.noise import Gaussian, Substitution

VOCAB = Vocabulary(torch.arange(10, 20))


class Trigger(torch.nn.Module):
    """Class 1 unless token 17 is attended somewhere (then class 0); the image nudges it."""

    def forward(self, batch):
        seen = ((batch["text"] == 17) & (batch["text_attention"] > 0)).any(1).float()
        score = 2.0 - 4.0 * seen + (batch["image"].mean((1, 2, 3)) - 0.5)
        return torch.stack([-score, score], 1)


def _input():
    tokens = torch.tensor([11, 12, 13, 14, 0, 0])
    attention = torch.tensor([1, 1, 1, 1, 0, 0])
    return torch.full((3, 4, 4), 0.5), tokens, attention


def test_base_attack_finds_the_trigger_and_respects_positions():
    image, tokens, attention = _input()
    model = Trigger()
    adv_image, adv = joint_attack(model, image, tokens, 1, 0.0, 1, VOCAB, attention=attention,
                                  candidates=200, seed=0)
    assert int((adv != tokens).sum()) == 1 and 17 in adv.tolist()
    assert true_class_probability(model, adv_image, adv, 1, attention) < 0.1
    only_last = torch.tensor([False, False, False, True, False, False])
    _, adv = joint_attack(model, image, tokens, 1, 0.0, 1, VOCAB, attention=attention,
                          positions=only_last, candidates=200, seed=0)
    assert adv[3] == 17 and torch.equal(adv[:3], tokens[:3])


def test_smoothed_attack_scores_the_position_while_it_shows_the_token():
    image, tokens, attention = _input()
    model = Trigger()
    noise = HybridNoise([Continuous("image", Gaussian(0.2)),
                         Tokens("text", Substitution(0.3, VOCAB.size), VOCAB)])
    gen = torch.Generator().manual_seed(0)
    before = true_class_probability(model, image, tokens, 1, attention, noise, 400, gen)
    _, adv = joint_attack(model, image, tokens, 1, 0.0, 1, VOCAB, attention=attention,
                          noise=noise, samples=16, candidates=200, seed=1)
    assert 17 in adv.tolist()
    after = true_class_probability(model, image, adv, 1, attention, noise, 400, gen)
    # the trigger survives the noise with probability keep (0.3): the class drops by ~0.3
    assert after < before - 0.15


def test_common_noise_ranks_candidates_on_the_same_copies():
    # One noisy copy per candidate: with fresh copies a candidate can score low because the
    # trigger happened to be drawn elsewhere; on shared copies only the shown token differs,
    # so the trigger wins every time.
    image, tokens, attention = _input()
    model = Trigger()
    noise = HybridNoise([Continuous("image", Gaussian(0.2)),
                         Tokens("text", Substitution(0.3, VOCAB.size), VOCAB)])
    for seed in range(8):
        _, adv = joint_attack(model, image, tokens, 1, 0.0, 1, VOCAB, attention=attention,
                              noise=noise, samples=1, candidates=40, seed=seed,
                              common_noise=True)
        assert 17 in adv.tolist()


def test_rounds_choose_tokens_afresh_within_the_budget():
    image, tokens, attention = _input()
    model = Trigger()
    noise = HybridNoise([Continuous("image", Gaussian(0.2)),
                         Tokens("text", Substitution(0.3, VOCAB.size), VOCAB)])
    adv_image, adv = joint_attack(model, image, tokens, 1, 0.3, 1, VOCAB, attention=attention,
                                  noise=noise, samples=4, steps=3, candidates=20, rounds=3,
                                  common_noise=True)
    assert int((adv != tokens).sum()) == 1 and 17 in adv.tolist()
    assert float((adv_image - image).norm()) <= 0.3 + 1e-5
    with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
        joint_attack(model, image, tokens, 1, 0.3, 1, VOCAB, attention=attention, rounds=0)
