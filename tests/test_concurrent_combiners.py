"""Concurrent nets and their meta-problem: λ is convex, learns through preprocessing."""

from __future__ import annotations

import pytest
import torch

import l2o
from l2o.concurrent.combiners import COMBINERS, STATISTICS, build_combiner, slot_statistics
from l2o.concurrent.initializers import build_set
from l2o.concurrent.problem import ConcurrentProblem, run_permutation
from l2o.config import TrainConfig
from l2o.errors import L2OError
from l2o.meta.train import meta_train
from l2o.meta.unroll import start_unroll, step_weights, truncation_window
from l2o.nets.preprocess import preprocess


def _inputs(net, B=3, D=4, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    grads = torch.randn(B, D, K, generator=g)
    losses = torch.rand(B, K, generator=g) + 0.1
    return grads, losses, net.pack(grads, losses, torch.zeros(B, dtype=torch.long))


def test_softmax_lambda_is_convex_and_combines_before_preprocessing():
    net = build_combiner("softmax", 3, seed=0)
    with torch.no_grad():
        net.logits.copy_(torch.tensor([0.3, -0.2, 0.05]))
    lam = net.mixing().detach()
    assert float(lam.sum()) == pytest.approx(1.0) and bool((lam > 0).all())
    _, _, inputs = _inputs(net)
    flat = inputs.flatten(0, 1)
    torch.testing.assert_close(net.features(flat), preprocess(flat @ lam, "log_sign"))


def test_attention_lambda_is_convex_per_row_and_follows_the_slots():
    net = build_combiner("attention", 4, seed=0)
    with torch.no_grad():
        net.score_w2.normal_()
    grads, losses, inputs = _inputs(net, K=4)
    lam = net.mixing(inputs)  # (B, D, K)
    torch.testing.assert_close(lam.sum(-1), torch.ones(lam.shape[:-1]))
    assert bool((lam >= 0).all())
    # the same λ for every coordinate of an instance
    torch.testing.assert_close(lam, lam[:, :1].expand_as(lam))
    # permuting the slots permutes λ the same way (it can follow the clean one anywhere)
    perm = torch.tensor([2, 0, 3, 1])
    permuted = net.mixing(net.pack(grads[..., perm], losses[:, perm], None))
    torch.testing.assert_close(permuted, lam[..., perm])


def test_attention_sums_its_scores_over_the_run():
    """λ at step t is the softmax of the slots' scores summed over steps 0..t: which slot is
    clean holds for the whole run, so each step's scores add evidence."""
    net = build_combiner("attention", 4, seed=0)
    with torch.no_grad():
        net.score_w2.normal_()
    B, D, K = 2, 5, 4
    state = net.init_state(B * D)
    total = torch.zeros(B, K)
    g = torch.Generator().manual_seed(1)
    for t in range(3):
        grads, losses = torch.randn(B, D, K, generator=g), torch.rand(B, K, generator=g) + 0.1
        total = total + net.scores(slot_statistics(grads, losses)).detach()
        _, state = net.step(net.pack(grads, losses, None), state, step=t)
        torch.testing.assert_close(net.last_mixing, torch.softmax(total, -1))
        # the memory is one row of K per coordinate, the same for every coordinate
        torch.testing.assert_close(state[-1], total.repeat_interleave(D, 0))


def test_slot_statistics_see_each_slot_s_distance_to_the_others():
    # slots 0 and 1 are each other's nearest; slot 2 is far from both
    base = torch.randn(1, 6, 1, generator=torch.Generator().manual_seed(0))
    offsets = torch.zeros(1, 6, 3)
    offsets[0, 0, 1], offsets[0, 1, 2] = 0.01, 1.0
    stats = slot_statistics(base + offsets, torch.ones(1, 3))
    nearest = stats[0, :, STATISTICS.index("nearest")]
    spread = stats[0, :, STATISTICS.index("mean_distance")]
    assert float(nearest[0]) == pytest.approx(float(nearest[1]))
    assert int(nearest.argmax()) == 2 and int(spread.argmax()) == 2
    # both scale free (the gradients × 3) and invariant to the order of the slots
    columns = [STATISTICS.index("nearest"), STATISTICS.index("mean_distance")]
    scaled = slot_statistics(3 * (base + offsets), torch.ones(1, 3))
    torch.testing.assert_close(scaled[..., columns], stats[..., columns])
    perm = torch.tensor([2, 0, 1])
    permuted = slot_statistics((base + offsets)[..., perm], torch.ones(1, 3))
    torch.testing.assert_close(permuted, stats[:, perm])


def test_slot_statistics_are_finite_at_k_1():
    stats = slot_statistics(torch.randn(2, 5, 1), torch.rand(2, 1))
    assert torch.isfinite(stats).all()


@pytest.mark.parametrize("combiner", ["softmax", "attention"])
def test_lambda_receives_meta_gradients_with_preprocessing_on(combiner):
    cset = build_set("noise", "quadratic", {}, {"levels": [0.01, 0.5, 1.0]})
    net = build_combiner(combiner, cset.k, seed=0, preprocess="log_sign")
    if combiner == "attention":
        with torch.no_grad():
            net.score_w2.normal_()  # from exactly zero only w2 itself gets a gradient
    problem = ConcurrentProblem(cset, net, seed=0, mode="fixed")
    theta0, observe, _ = problem.sample("train", list(range(4)))
    start = start_unroll(net, theta0, observe)
    objective, _, _ = truncation_window(net, start, observe, 5, step_weights("uniform", 5))
    objective.backward()
    lam_params = [net.logits] if combiner == "softmax" else [net.score_w1, net.score_w2]
    for p in lam_params:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_meanstd_is_well_defined_at_k_1_and_concat_stacks_features():
    net = build_combiner("meanstd", 1, seed=0)
    _, _, inputs = _inputs(net, K=1)
    feats = net.features(inputs.flatten(0, 1))
    assert feats.shape == (12, 4) and torch.isfinite(feats).all()
    torch.testing.assert_close(feats[:, 2:], preprocess(torch.zeros(12), "log_sign"))
    concat = build_combiner("concat", 3, seed=0)
    _, _, inputs = _inputs(concat)
    flat = inputs.flatten(0, 1)
    torch.testing.assert_close(concat.features(flat)[:, 2:4], preprocess(flat[:, 1], "log_sign"))


def test_references_median_trimmed_mean_and_oracle():
    g = torch.tensor([[1.0, 100.0, 2.0, 3.0, -50.0]])
    median = build_combiner("median", 5, seed=0)
    trimmed = build_combiner("trimmed-mean", 5, seed=0)
    assert float(median.combine(g)) == 2.0
    assert float(trimmed.combine(g)) == pytest.approx(2.0)  # drops 100 and -50
    oracle = build_combiner("oracle", 3, seed=0)
    grads = torch.randn(2, 4, 3)
    packed = oracle.pack(grads, torch.ones(2, 3), torch.tensor([2, 0]))
    torch.testing.assert_close(packed[0, :, 0], grads[0, :, 2])
    torch.testing.assert_close(packed[1, :, 0], grads[1, :, 0])
    with pytest.raises(L2OError, match="clean optimizee"):
        oracle.pack(grads, torch.ones(2, 3), None)


@pytest.mark.parametrize("combiner", list(COMBINERS))
def test_every_combiner_round_trips_through_safetensors(combiner, tmp_path):
    net = build_combiner(combiner, 3, seed=1, hidden_size=8)
    l2o.save_optimizer(net, tmp_path)
    loaded = l2o.load(tmp_path)
    assert type(loaded) is type(net) and loaded.arch_config() == net.arch_config()
    for (k, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_clean_slot_is_random_per_run_and_can_be_forced():
    slots = {int((run_permutation(5, seed, 0, None) == 0).nonzero()) for seed in range(20)}
    assert len(slots) >= 4  # not always slot 0
    assert int((run_permutation(5, 7, 2, 3) == 2).nonzero()) == 3
    with pytest.raises(L2OError, match="clean_slot must be in"):
        run_permutation(5, 0, 0, 5)


def test_observer_gives_the_clean_objective_and_permuted_inputs():
    cset = build_set("noise", "quadratic", {}, {"levels": [0.01, 1.0, 2.0]})
    net = build_combiner("concat", cset.k, seed=0)
    problem = ConcurrentProblem(cset, net, seed=5, mode="shuffle")
    indices = list(range(8))
    theta0, observe, _ = problem.sample("train", indices)
    loss, grad, inputs = observe(theta0, 0)
    batch = cset.sample("train", indices)
    clean_loss, clean_grad = batch.clean_loss_and_grad(theta0, 0)
    torch.testing.assert_close(loss, clean_loss)  # never an optimizee's own loss
    torch.testing.assert_close(grad, clean_grad)
    _, canonical = batch.grads(theta0, 0)
    perm = problem.last_perm
    assert len({tuple(p) for p in perm.tolist()}) > 1  # shuffled per instance
    for b in range(8):
        torch.testing.assert_close(inputs[b], canonical[b][:, perm[b]])


def test_a_short_seeded_run_moves_softmax_lambda_to_the_clean_slot():
    cset = build_set("noise", "quadratic", {}, {"levels": [0.01, 2.0, 4.0]})
    config = TrainConfig(
        batch_size=16, horizon=20, truncation=10, iterations=40, val_every=100, val_instances=4
    )
    net = build_combiner("softmax", cset.k, seed=0)
    problem = ConcurrentProblem(cset, net, seed=1, mode="fixed")
    clean = problem.clean_slot
    assert clean != 0
    trace: list[float] = []  # λ of the clean slot after every meta-iteration, in memory
    net, _ = meta_train(
        config,
        problem=problem.meta_problem(),
        net=net,
        callback=lambda row: trace.append(float(net.mixing()[clean].detach())),
    )
    assert len(trace) == config.iterations and trace[-1] > trace[0]
    lam = net.mixing().detach()
    assert int(lam.argmax()) == clean
    assert float(lam[clean]) > 0.5  # from 1/3
