"""How much λ any combiner can put on the clean optimizee of `l2o concurrent noise`, shuffled.

Everything a combiner sees (each optimizee's loss ‖Wθ − y_k‖² and gradient, at any θ) is a
function of W and the targets y_k = y* + σ_k ε_k, and W says nothing about which slot is clean.
So the best possible λ is the exact Bayes posterior P(slot s is clean | y_1..y_K), with the
levels known, y* unknown (flat prior) and every assignment of levels to slots equally likely:
E[λ_clean] ≤ E[max_s P(s clean | y)], the MAP accuracy. Run on the test instances of the
default noise set:

    .venv/bin/python benchmarks/noise_lambda_ceiling.py [--instances 1000] [--levels 0.01 0.1 ...]
"""

from __future__ import annotations

import argparse
import itertools
import math

import torch

from l2o.concurrent.initializers import build_set


def clean_posterior(y: torch.Tensor, levels: list[float]) -> torch.Tensor:
    """``(B, K)``: P(slot s holds the lowest level | targets ``y`` ``(B, K, d)``)."""
    B, K, d = y.shape
    clean = min(range(K), key=levels.__getitem__)
    perms = torch.tensor(list(itertools.permutations(range(K))))  # slot s has level perms[p, s]
    sigma = torch.tensor(levels, dtype=y.dtype)[perms]  # (P, K)
    w = sigma.pow(-2)
    # y_s = c + σ_s ε_s with c integrated out: the precision-weighted centre's residuals
    centre = torch.einsum("pk,bkd->bpd", w, y) / w.sum(1).view(1, -1, 1)
    resid = (y.unsqueeze(1) - centre.unsqueeze(2)).pow(2).sum(-1)  # (B, P, K)
    logp = -0.5 * (w * resid).sum(-1) - d * sigma.log().sum(1) - 0.5 * d * w.sum(1).log()
    post = torch.softmax(logp, 1)  # (B, P)
    slot_of_clean = (perms == clean).int().argmax(1)  # (P,)
    return torch.zeros(B, K, dtype=y.dtype).index_add_(1, slot_of_clean, post)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.01, 0.1, 0.2, 0.3, 0.4])
    args = parser.parse_args()
    cset = build_set("noise", "quadratic", {}, {"levels": args.levels})
    batch = cset.sample("test", list(range(args.instances)))
    y = batch.noisy_y.double()  # variant order; the posterior does not depend on the slots
    post = clean_posterior(y, args.levels)
    best = post.max(1).values.mean().item()
    on_clean = post[:, cset.clean].mean().item()
    half = 1.96 * post.max(1).values.std().item() / math.sqrt(args.instances)
    print(
        f"levels {args.levels}, dim {cset.family.dim}, {args.instances} test instances: "
        f"best possible mean λ on the clean optimizee (MAP accuracy) {best:.3f} ± {half:.3f}; "
        f"mean posterior on it {on_clean:.3f}"
    )


if __name__ == "__main__":
    main()
