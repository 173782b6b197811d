"""Byzantine attacks: ByzFL's definitions, slots drawn per instance, users' own attacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from byzfl_ref import load
from l2o.concurrent import attacks
from l2o.concurrent.attacks import ATTACKS, build_attack_set, register_attack
from l2o.concurrent.initializers import build_set, describe_all
from l2o.errors import L2OError

BYZFL = load()


@pytest.mark.skipif(BYZFL is None, reason="byzfl not installed (make install)")
@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("signflip", lambda a: a.SignFlipping()),
        ("ipm", lambda a: a.InnerProductManipulation(tau=2.0)),
        ("alie", lambda a: a.ALittleIsEnough(tau=1.5)),
        ("inf", lambda a: a.Inf()),
    ],
)
def test_attacks_agree_with_byzfl(name, make):
    _, byz_attacks = BYZFL
    honest = torch.randn(3, 6, 7, dtype=torch.float64)
    ours = ATTACKS[name][0](honest, 2, torch.Generator())
    ref = np.stack([np.asarray(make(byz_attacks)(h.T.numpy().copy())) for h in honest])
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10)


def test_gaussian_has_the_stated_distribution():
    g = ATTACKS["gaussian"][0](torch.zeros(4, 500, 5), 3, torch.Generator().manual_seed(0))
    assert g.shape == (4, 500, 3)
    assert abs(float(g.mean())) < 0.05 and abs(float(g.std()) - 1.0) < 0.05


def test_byzantine_slots_are_drawn_per_instance_and_hidden_behind_plausible_losses():
    cset = build_attack_set("signflip", "quadratic", {}, {"k": 6, "f": 2})
    batch = cset.sample("train", list(range(8)))
    assert (batch.byzantine.sum(1) == 2).all()
    assert len({tuple(m.tolist()) for m in batch.byzantine}) > 1  # not the same slots everywhere
    losses, grads = batch.grads(batch.init_params(), 0)
    assert grads.shape == (8, 10, 6)
    honest_mean = (grads * batch.honest.unsqueeze(1)).sum(2) / 4
    for b in range(8):
        for k in torch.nonzero(batch.byzantine[b]).flatten():
            torch.testing.assert_close(grads[b, :, k], -honest_mean[b])
    assert torch.isfinite(losses).all()
    # the reference source (fltrust's) is a (K+1)-th honest variant, never one of the K
    assert batch.reference is not None
    assert not any(torch.allclose(batch.reference[0], grads[0, :, k]) for k in range(6))
    # same instances, another split: other draws; same split again: the same draws
    again = cset.sample("train", list(range(8)))
    assert torch.equal(again.byzantine, batch.byzantine)


def test_digits_attack_set_uses_disjoint_shards():
    cset = build_set("alie", "digits-mlp", {}, {"k": 4, "f": 1})
    batch = cset.sample("test", [0, 1])
    losses, grads = batch.grads(batch.init_params(), 0)
    assert grads.shape == (2, cset.dim, 4) and losses.shape == (2, 4)
    assert cset.clean is None and cset.labels == [f"source {i}" for i in range(4)]


def test_a_users_attack_registers_without_editing_l2o():
    def scaled(honest, f, generator):
        return 10 * honest.mean(2)

    register_attack("test-scaled", scaled, "ten times the mean")
    try:
        assert "test-scaled" in describe_all()
        cset = build_set("test-scaled", "quadratic", {}, {"k": 5, "f": 1})
        batch = cset.sample("validation", [0, 1, 2])
        _, grads = batch.grads(batch.init_params(), 0)
        mean = (grads * batch.honest.unsqueeze(1)).sum(2) / 4
        byz = grads.transpose(1, 2)[batch.byzantine]  # (3, D)
        torch.testing.assert_close(byz, 10 * mean)
    finally:
        del attacks.ATTACKS["test-scaled"]


def test_bad_attack_input_is_one_line():
    with pytest.raises(L2OError, match=r"f .* must be in"):
        build_attack_set("signflip", "quadratic", {}, {"k": 4, "f": 4})
    with pytest.raises(L2OError, match="unknown option"):
        build_attack_set("signflip", "quadratic", {}, {"levels": [1]})
    with pytest.raises(L2OError, match="unknown attack"):
        build_attack_set("nope", "quadratic", {}, {})

    def wrong(honest, f, generator):
        return honest

    register_attack("test-wrong", wrong)
    try:
        batch = build_set("test-wrong", "quadratic", {}, {"k": 5, "f": 2}).sample("train", [0])
        with pytest.raises(L2OError, match="must return"):
            batch.grads(batch.init_params(), 0)
    finally:
        del attacks.ATTACKS["test-wrong"]
