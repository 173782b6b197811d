"""The robust aggregators: batched over instances, equal to ByzFL's per-instance definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from byzfl_ref import load
from l2o.concurrent.aggregators import Context, aggregate, cclip, check_name, geomed, nnm
from l2o.errors import L2OError

BYZFL = load()
needs_byzfl = pytest.mark.skipif(BYZFL is None, reason="byzfl not installed (make install)")


def _grads(B: int = 3, D: int = 6, K: int = 7, seed: int = 0) -> torch.Tensor:
    g = torch.randn(B, D, K, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    g[:, :, -2:] *= 20  # two outliers, so the rules disagree with the mean
    return g


def _per_instance(rule, grads: torch.Tensor) -> np.ndarray:
    """ByzFL's rule on each instance: vectors are rows (K, D), numpy in, numpy out."""
    return np.stack([np.asarray(rule(g.T.numpy().copy())) for g in grads])


@needs_byzfl
@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("mean", lambda agg, f: agg.Average()),
        ("median", lambda agg, f: agg.Median()),
        ("trimmed-mean", lambda agg, f: agg.TrMean(f=f)),
        ("krum", lambda agg, f: agg.Krum(f=f)),
        ("multi-krum", lambda agg, f: agg.MultiKrum(f=f)),
    ],
)
@pytest.mark.parametrize("f", [1, 2, 3])
def test_rules_agree_with_byzfl(name, make, f):
    aggregators, _ = BYZFL
    grads = _grads()
    ours = aggregate(name, grads, Context(f=f)).numpy()
    np.testing.assert_allclose(ours, _per_instance(make(aggregators, f), grads), rtol=1e-10)


@needs_byzfl
def test_geomed_and_cclip_agree_with_byzfl_at_its_parameters():
    aggregators, _ = BYZFL
    grads = _grads()
    ours = geomed(grads, Context(), nu=0.1, iterations=3).numpy()
    ref = _per_instance(aggregators.GeometricMedian(nu=0.1, T=3), grads)
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
    ours = cclip(grads, Context(), tau=5.0, iterations=2).numpy()
    # ByzFL's CenteredClipping keeps its centre between calls: a fresh one per instance
    ref = np.stack([aggregators.CenteredClipping(tau=5.0, L=2)(g.T.numpy().copy()) for g in grads])
    np.testing.assert_allclose(ours, ref, rtol=1e-10)


@needs_byzfl
@pytest.mark.parametrize("f", [1, 3])
def test_nnm_agrees_with_byzfl(f):
    aggregators, _ = BYZFL
    grads = _grads()
    ours = nnm(grads, f).numpy()  # (B, D, K)
    ref = np.stack([np.asarray(aggregators.NNM(f=f)(g.T.numpy().copy())).T for g in grads])
    np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_fltrust_matches_its_definition():
    """Cao et al.: relu(cos) trust, sources rescaled to the reference's norm (not in ByzFL)."""
    grads, ref = _grads(), torch.randn(3, 6, dtype=torch.float64)
    ref[0] = grads[0, :, 0]  # instance 0: the reference is source 0's direction
    out = aggregate("fltrust", grads, Context(reference=ref)).numpy()
    for b in range(3):
        g0, num, den = ref[b].numpy(), 0.0, 0.0
        for k in range(7):
            g = grads[b, :, k].numpy()
            trust = max(0.0, float(g @ g0) / (np.linalg.norm(g) * np.linalg.norm(g0)))
            num, den = num + trust * g * np.linalg.norm(g0) / np.linalg.norm(g), den + trust
        np.testing.assert_allclose(out[b], num / den, rtol=1e-10)


def test_oracle_is_the_honest_mean_and_ignores_inf():
    grads = _grads()
    honest = torch.ones(3, 7, dtype=torch.bool)
    honest[:, 5:] = False
    grads[:, :, 6] = math.inf
    out = aggregate("oracle", grads, Context(honest=honest))
    torch.testing.assert_close(out, grads[:, :, :5].mean(2))


@pytest.mark.parametrize(
    "name",
    [
        "median",
        "trimmed-mean",
        "krum",
        "multi-krum",
        "geomed",
        "cclip",
        "nnm+trimmed-mean",
        "fltrust",
    ],
)
def test_robust_rules_survive_inf_sources(name):
    """Two sources at +inf (the inf attack, f = 2): every robust rule stays finite."""
    grads = _grads()
    grads[:, :, :2] = math.inf
    out = aggregate(name, grads, Context(f=2, reference=grads[:, :, 3]))
    assert torch.isfinite(out).all()
    assert not torch.isfinite(aggregate("mean", grads, Context(f=2))).all()


def test_batched_equals_one_instance_at_a_time():
    grads = _grads(B=4)
    for name in ("krum", "multi-krum", "geomed", "nnm+trimmed-mean"):
        batched = aggregate(name, grads, Context(f=2))
        single = torch.cat([aggregate(name, g[None], Context(f=2)) for g in grads])
        torch.testing.assert_close(batched, single)


def test_bad_names_and_f_are_one_line_errors():
    with pytest.raises(L2OError, match="unknown aggregator 'kram'"):
        check_name("kram")
    with pytest.raises(L2OError, match="unknown aggregator"):
        check_name("krum+nnm")
    with pytest.raises(L2OError, match="2f < K"):
        aggregate("krum", _grads(K=4), Context(f=2))
