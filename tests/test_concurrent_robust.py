"""The robust study: its config, robust.json as PRODUCT.md says, a learned aggregator learning."""

from __future__ import annotations

import json

import pytest
import torch

from l2o.cli.main import main
from l2o.concurrent.attacks import build_attack_set
from l2o.concurrent.robust import load_robust_config, rule, run_robust, run_rule, train_learned
from l2o.concurrent.scoring import (
    CLIP_RADIUS,
    SOURCE_STATISTICS,
    LearnedAggregator,
    source_statistics,
)
from l2o.errors import L2OError

TINY = [
    "steps=8",
    "instances=4",
    "trials=3",
    "tune_instances=4",
    "fit_instances=1",
    "fit_iterations=20",
    "train.iterations=2",
    "train.batch_size=4",
    "train.val_instances=4",
]


def test_config_layers_and_errors():
    cfg = load_robust_config(None, ["train.iterations=5"], "quadratic", f=[1, 2])
    assert cfg.f == (1, 2) and cfg.train.iterations == 5 and cfg.train.horizon == cfg.steps
    digits = load_robust_config(None, [], "digits-mlp")
    assert digits.task_options == {"batch_size": 32} and digits.train.batch_size == 8
    chosen = load_robust_config(None, [], "quadratic", attacks=["signflip", "ipm"])
    assert chosen.held_out == ("ipm",) and chosen.training_attacks == ("signflip",)
    only = load_robust_config(None, [], "quadratic", attacks=["ipm"])
    assert only.held_out == ()
    with pytest.raises(L2OError, match="2f < K"):
        load_robust_config(None, [], "quadratic", f=[5])
    with pytest.raises(L2OError, match="unknown attack"):
        load_robust_config(None, [], "quadratic", attacks=["nope"])
    with pytest.raises(L2OError, match="unknown aggregator"):
        load_robust_config(None, ["aggregators=['kram']"], "quadratic")
    with pytest.raises(L2OError, match="fit_iterations must be"):
        load_robust_config(None, ["fit_iterations=-1"], "quadratic")
    with pytest.raises(L2OError, match="leave at least one"):
        load_robust_config(None, ["held_out=['signflip']"], "quadratic", attacks=["signflip"])


def test_robust_json_is_what_product_md_says(tmp_path):
    code = main(
        [
            "robust",
            "quadratic",
            "--k",
            "5",
            "--f",
            "1,2",
            "--attacks",
            "signflip,ipm,inf",
            "--out",
            str(tmp_path),
            *[x for kv in TINY for x in ("--set", kv)],
        ]
    )
    assert code == 0
    data = json.loads((tmp_path / "robust.json").read_text())
    assert {"task", "k", "f", "attacks", "held_out_attacks", "oracle", "aggregators"} <= set(data)
    assert data["task"] == "quadratic" and data["k"] == 5 and data["f"] == [1, 2]
    assert data["held_out_attacks"] == ["ipm", "inf"]
    assert set(data["oracle"]) == {"1", "2"}
    aggs = data["aggregators"]
    assert aggs["learned"]["learned"] is True and aggs["krum"]["learned"] is False
    assert "advantage" in aggs["fltrust"]
    for agg in aggs.values():
        assert set(agg["by_attack"]) == {"signflip", "ipm", "inf"}
        for f in ("1", "2"):
            by = [agg["by_attack"][a][f] for a in data["attacks"]]
            worst = agg["worst_case"][f]
            assert worst is None if None in by else worst == max(by)
    assert aggs["mean"]["worst_case"]["1"] is None  # inf breaks the mean: diverged
    assert aggs["median"]["worst_case"]["1"] is not None
    assert (tmp_path / "robust.png").stat().st_size > 0
    assert main(["robust", "quadratic", "--out", str(tmp_path)]) == 2  # finished: --force


def test_cli_errors_are_one_line(capsys):
    assert main(["robust", "quadratic", "--f", "1,x"]) == 2
    assert main(["robust", "quadratic", "--k", "4", "--f", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error:") for line in err)


def test_statistics_are_scale_free_and_equivariant():
    grads = torch.randn(2, 30, 6, dtype=torch.float64)
    stats, ok = source_statistics(grads)
    assert ok.all() and stats.shape == (2, 6, len(SOURCE_STATISTICS))
    torch.testing.assert_close(source_statistics(grads * 1e3)[0], stats)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(source_statistics(grads[..., perm])[0], stats[:, perm])


def test_the_shift_statistic_tells_alie_from_honest_sources():
    """ALIE (mean + 1.5 std per coordinate) sits among the honest sources by distance and
    cosine; its robust z-scores are on one side at every coordinate, honest ones are not."""
    gen = torch.Generator().manual_seed(0)
    honest = torch.randn(32, 20, 9, generator=gen) + torch.randn(32, 20, 1, generator=gen)
    alie = honest.mean(2, keepdim=True) + 1.5 * honest.std(2, keepdim=True)
    stats, _ = source_statistics(torch.cat([honest, alie], 2))
    shift = stats[..., SOURCE_STATISTICS.index("shift_z")]
    assert bool((shift[:, 9] > 1.5 * shift[:, :9].max(1).values).all())


def test_the_clip_radius_is_set_by_the_sources_the_gates_trust():
    """Four tiny sources with λ = 0 (signflip near the optimum) leave the six trusted ones
    clipped to twice their own median norm, not to the median of all ten (the tiny ones' size)."""
    net = LearnedAggregator(k=10, seed=0)
    gen = torch.Generator().manual_seed(0)
    honest = torch.randn(2, 12, 6, generator=gen) * torch.linspace(0.5, 2.0, 6)
    grads = torch.cat([honest, 1e-3 * torch.randn(2, 12, 4, generator=gen)], 2)
    logits = torch.cat([torch.full((2, 6), 50.0), torch.full((2, 4), -torch.inf)], 1)  # λ 1/6 or 0
    norms = honest.norm(dim=1, keepdim=True)
    radius = CLIP_RADIUS * norms.sort(2).values[..., 2:3]  # the lower median of six
    expected = (honest * (radius / norms).clamp(max=1.0)).mean(2)
    ok = torch.ones(2, 10, dtype=torch.bool)
    torch.testing.assert_close(net.mix(grads, logits, ok), expected)


def test_the_step_protocol_is_adam_on_the_mix_and_the_net_reloads(tmp_path):
    from l2o.resolve import load
    from l2o.serialization import save_optimizer

    net = LearnedAggregator(k=5, lr=0.1, seed=1)
    with torch.no_grad():
        net.w2.normal_()
    grads = torch.randn(3, 8, 5)
    update, _ = net.step(grads, net.init_state(24), None, 0)
    mixed = net.combine(grads)
    # Adam's first step: -lr * g / (|g| + eps)
    torch.testing.assert_close(update, -0.1 * mixed / (mixed.abs() + 1e-8))
    save_optimizer(net, tmp_path)
    again = load(tmp_path)
    assert isinstance(again, LearnedAggregator) and again.arch_config() == net.arch_config()
    torch.testing.assert_close(again.combine(grads), mixed)


def test_the_learned_aggregator_learns_to_resist_an_attack():
    """Meta-trained (no gate fit) on IPM (f = 3 of K = 7: the mean then points uphill) on noisy
    least squares, it ends near the oracle on held-out instances, where it started as the mean."""
    cfg = load_robust_config(
        None,
        [
            "attacks=['ipm', 'signflip']",
            "held_out=['signflip']",
            "fit_iterations=0",  # meta-training alone
            "steps=20",
            "train.iterations=25",
            # from the mean (which diverges here) at 0.01 the gates had not left that plateau
            # after 80 iterations once sources were clipped at twice the median norm
            "train.meta_lr=0.1",
            "train.batch_size=8",
            "train.val_every=25",
            "train.val_instances=8",
        ],
        "quadratic",
        k=7,
        f=[3],
    )
    batch = build_attack_set("ipm", "quadratic", {}, {"k": 7, "f": 3}).sample("test", range(16))
    untrained = LearnedAggregator(k=7, lr=0.1, seed=0)
    net, _ = train_learned(cfg, 0.1, None, None)

    def final(combine) -> float:
        return float(run_rule(batch, combine, 3, 0.1, 20).median())

    oracle = final(rule("oracle"))
    before = final(lambda g, ctx: untrained.combine(g, ctx.state))
    after = final(lambda g, ctx: net.combine(g, ctx.state))
    assert before > 2 * oracle  # untrained: the (clipped) mean, fooled
    assert after < 1.5 * oracle, (after, oracle)


def test_fitted_gates_cut_one_byzantine_source_of_ten_on_held_out_attacks():
    """The gates fitted on signflip, gaussian and ALIE (no meta-training) give a held-out attack's
    sources (IPM, f = 1 of K = 10: the case meta-training alone missed, and f = 3) no weight
    and the honest ones about equal weights, on test instances; the runs end at the oracle's
    loss, where the untrained aggregator (the mean) gives each Byzantine source 1/10."""
    cfg = load_robust_config(
        None,
        [
            "attacks=['signflip', 'gaussian', 'ipm', 'alie']",
            "held_out=['ipm']",
            "steps=20",
            "fit_instances=8",
            "fit_iterations=1000",
            "train.iterations=0",
        ],
        "quadratic",
        k=10,
        f=[1, 3],
    )
    untrained = LearnedAggregator(k=10, lr=0.1, seed=0)
    net, _ = train_learned(cfg, 0.1, None, None)
    for f in (1, 3):
        batch = build_attack_set("ipm", "quadratic", {}, {"k": 10, "f": f}).sample(
            "test", range(16)
        )
        _, grads = batch.grads(batch.init_params(), 0)
        with torch.no_grad():
            lam, mean = net.mixing(grads), untrained.mixing(grads)
        assert float(mean[batch.byzantine].min()) > 0.09  # the mean's 0.1
        byz, honest = lam[batch.byzantine], lam * batch.honest
        n_eff = honest.sum(1) ** 2 / honest.pow(2).sum(1)  # equal weights: 10 - f
        assert float(byz.max()) < 1e-3, (f, byz.max())
        assert float(n_eff.median()) > 0.97 * (10 - f) and float(n_eff.min()) > 0.85 * (10 - f)
        oracle = float(run_rule(batch, rule("oracle"), f, 0.1, 20).median())
        learned = float(run_rule(batch, lambda g, ctx: net.combine(g), f, 0.1, 20).median())
        assert learned < 1.1 * oracle, (f, learned, oracle)


def test_a_fine_tune_that_loses_to_the_fitted_gates_on_validation_is_dropped(monkeypatch):
    """A meta-training run that wrecks the gates (here: one that trusts only the source farthest
    from the median) loses on validation and the fitted gates come back."""
    import l2o.concurrent.robust as robust
    from l2o.meta.train import History

    keys = [
        "attacks=['signflip', 'gaussian']",
        "held_out=[]",
        "steps=20",
        "fit_instances=2",
        "fit_iterations=100",
        "train.batch_size=4",
        "train.val_every=2",
        "train.val_instances=8",
    ]
    fitted, _ = train_learned(
        load_robust_config(None, [*keys, "train.iterations=0"], "quadratic", k=5, f=[1]),
        0.1,
        None,
        None,
    )

    def wrecking_meta_train(config, out_dir, problem, net, callback):
        with torch.no_grad():
            net.w2.zero_()
            net.linear.zero_()
            net.linear[SOURCE_STATISTICS.index("log_distance_ratio")] = 10.0
        val = problem.evaluate(net, "validation", list(range(config.val_instances)), 20)
        return net, History(best_val=val)

    monkeypatch.setattr(robust, "meta_train", wrecking_meta_train)
    wrecked = load_robust_config(None, [*keys, "train.iterations=2"], "quadratic", k=5, f=[1])
    kept, selection = train_learned(wrecked, 0.1, None, None)
    assert selection["weights"] == "fitted gates"
    assert selection["meta_trained_val_loss"] > selection["fitted_val_loss"]
    for name, value in fitted.state_dict().items():
        torch.testing.assert_close(kept.state_dict()[name], value)


def test_meta_training_on_digits_has_finite_meta_gradients(tmp_path):
    """Digits have coordinates whose gradient is exactly 0: Adam's sqrt must not give NaN."""
    import csv

    cfg = load_robust_config(
        None,
        [
            "steps=3",
            "attacks=['gaussian', 'signflip']",
            "fit_iterations=0",  # what moves the weights is the meta-gradient
            "train.iterations=2",
            "train.batch_size=2",
            "train.val_instances=2",
        ],
        "digits-mlp",
        k=3,
        f=[1],
    )
    from l2o.serialization import load_optimizer_file

    train_learned(cfg, 0.1, tmp_path, None)
    with open(tmp_path / "learned" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["skipped"]) for r in rows] == [0, 0]
    # the meta-trained weights moved (whether or not they beat the start on validation)
    trained = load_optimizer_file(tmp_path / "learned" / "optimizer.safetensors")
    assert float(trained.linear.detach().abs().sum()) > 0


def test_run_robust_in_memory():
    cfg = load_robust_config(
        None, [*TINY, "aggregators=['median']", "learned=false"], "quadratic", k=5, f=[1]
    )
    res = run_robust(cfg)
    assert set(res["aggregators"]) == {"median"} and res["held_out_attacks"] == []


def test_adams_rate_is_tuned_by_l2o_compares_optuna_study_and_a_rerun_adds_no_trials(tmp_path):
    import optuna

    cfg = load_robust_config(
        None, [*TINY, "aggregators=['median']", "learned=false"], "quadratic", k=5, f=[1]
    )
    first = run_robust(cfg, tmp_path)["settings"]
    tuning = first["tuning"]
    assert (tuning["split"], tuning["trials"], tuning["new_trials"]) == ("validation", 3, 3)
    assert tuning["objective"] == "median final loss"
    study = optuna.load_study(
        study_name=tuning["study"], storage=f"sqlite:///{tmp_path / 'tuning.db'}"
    )
    assert study.best_params["lr"] == first["adam_lr"]
    options = study.user_attrs["task_options"]["initializer_options"]
    assert options["f"] == 0  # the oracle's task: no source attacked
    again = run_robust(cfg, tmp_path)["settings"]
    assert (again["tuning"]["trials"], again["tuning"]["new_trials"]) == (3, 0)
    assert again["adam_lr"] == first["adam_lr"]
    # the study does not depend on which attacks are scored: f = 0 attacks nothing
    other = load_robust_config(
        None,
        [*TINY, "aggregators=['median']", "learned=false"],
        "quadratic",
        k=5,
        f=[1],
        attacks=["alie"],
    )
    assert run_robust(other, tmp_path)["settings"]["tuning"]["new_trials"] == 0
    with pytest.raises(L2OError, match="lrs is gone"):
        load_robust_config(None, ["lrs=[0.1]"], "quadratic")
    with pytest.raises(L2OError, match="objective must be one of"):
        load_robust_config(None, ["objective='max'"], "quadratic")


def test_the_tuned_adam_is_the_studys_adam_on_the_oracle():
    """What tuning scores (torch.optim.Adam on the oracle family) is the study's oracle run."""
    from l2o.baselines import get_baseline
    from l2o.concurrent.robust import attack_set, oracle_family
    from l2o.evaluate import BaselineRunner

    cfg = load_robust_config(None, TINY, "quadratic", k=5, f=[1])
    indices = [0, 1, 2]
    tuned = BaselineRunner(get_baseline("adam"), {"lr": 0.05}).final_loss(
        oracle_family(cfg).sample("validation", indices), cfg.steps
    )
    batch = attack_set(cfg, "alie", 0).sample("validation", indices)
    study = run_rule(batch, rule("oracle"), 0, 0.05, cfg.steps)
    torch.testing.assert_close(tuned, study, rtol=1e-4, atol=1e-6)


def test_sources_within_twice_the_median_norm_pass_unclipped():
    """Honest sources differ by their noise; clipping them to the median norm itself moved the
    mix off their mean (least squares: 3-12 % of the oracle's loss)."""
    net = LearnedAggregator(k=6, seed=0)
    gen = torch.Generator().manual_seed(1)
    unit = torch.randn(2, 12, 6, generator=gen)
    grads = unit / unit.norm(dim=1, keepdim=True) * torch.linspace(0.6, 1.9, 6)  # median ~1.1
    ok = torch.ones(2, 6, dtype=torch.bool)
    torch.testing.assert_close(net.mix(grads, torch.full((2, 6), 50.0), ok), grads.mean(2))


def test_the_spread_statistic_tells_alie_from_honest_sources_in_correlated_coordinates():
    """Least squares' gradient noise is Wᵀε: its 10 coordinates are correlated, so honest
    sources' mean z-scores spread as far as ALIE's; ALIE's deviation from the median still
    lines up with the coordinatewise spread."""
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(64, 10, 10, generator=gen)
    honest = W.transpose(1, 2) @ torch.randn(64, 10, 9, generator=gen)
    alie = honest.mean(2, keepdim=True) + 1.5 * honest.std(2, keepdim=True)
    stats, _ = source_statistics(torch.cat([honest, alie], 2))
    spread = stats[..., SOURCE_STATISTICS.index("spread_cos")]
    assert bool((spread[:, 9] > spread[:, :9].max(1).values).float().mean() > 0.95)
    assert float(spread[:, 9].min()) > 0.8


def test_the_gates_average_their_logits_over_the_run_in_both_paths():
    """combine() with a run's memory uses the average of every step's gate logits so far, and
    step() (meta-training) carries the same average in its state."""
    net = LearnedAggregator(k=5, lr=0.1, seed=0)
    with torch.no_grad():
        net.w2.normal_()  # gates that differ by source
    gen = torch.Generator().manual_seed(2)
    grads = [torch.randn(2, 7, 5, generator=gen) for _ in range(3)]
    memory: dict[str, torch.Tensor] = {}
    state = net.init_state(2 * 7)
    seen = []
    for t, g in enumerate(grads):
        stats, ok = source_statistics(g)
        seen.append(net.gate_logits(stats, ok).detach())
        average = torch.stack(seen).mean(0)
        with torch.no_grad():
            torch.testing.assert_close(net.combine(g, memory), net.mix(g, average, ok))
            _, state = net.step(g, state, step=t)
        torch.testing.assert_close(state[2].view(2, 7, 5)[:, 0], memory["gate_logits"])
    assert not torch.allclose(seen[0], seen[-1])  # the average is not one step's logits
