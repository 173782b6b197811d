#!/usr/bin/env bash
# Train, evaluate and install a shipped general-purpose learned optimizer (CPU, one thread).
#
#   bash scripts/make_general.sh                     # `general`: ~1 h of training + the suite
#   NAME=general-fast bash scripts/make_general.sh   # `general-fast`: ~4 min + the suite
#   BASELINES_FROM=runs/general bash scripts/make_general.sh   # reuse that suite's baselines
#   BASELINES_CARD=general bash scripts/make_general.sh   # ... or those in a shipped card
#   SKIP_TRAIN=1 ...                                 # steps 2-3 on the run already in OUT
#
# 1. meta-train the network of configs/NAME.toml on its task distribution (quadratics, random
#    MLPs with and without parameter/loss rescaling, the digits MLP's meta-train half with ReLU
#    and with sigmoid; no other real dataset), log meta-loss, log-uniform unroll lengths up to
#    the config's max_horizon; 300 iterations of 16 instances at meta_lr 1e-3, the best of 15
#    validations kept (docs/general-study.md has the seeds and the ablations);
#    `general`: rnnprop with adapt_step (s <= 1) and the hypergradient rule for s, unrolls to
#    1,000 steps, then (no retraining) the floor of s lowered to -16 (scripts/adjust_step_size.py);
#    `general-fast`: the per-coordinate mlp, unrolls to 400 steps;
# 2. the generalisation suite of `l2o compare --generalization suite` on the quadratic and the
#    digits MLP, the network untuned (its default lr) against baselines tuned per setting (with
#    BASELINES_FROM or BASELINES_CARD: scripts/score_against_suite.py against that earlier
#    suite's baselines, or a shipped card's, on the same test instances);
# 3. install it as src/l2o/pretrained/NAME.* with its card.
set -euo pipefail
cd "$(dirname "$0")/.."
L=.venv/bin/l2o
NAME=${NAME:-general}
OUT=${OUT:-runs/$NAME}
TRAIN=(train mixture --config "configs/$NAME.toml" --set batch_size=16 --set iterations=300
       --set horizon=100 --set meta_lr=0.001 --set horizon_sampling=log_uniform --set val_every=20
       --set val_instances=32 --set checkpoint_every=20 --out "$OUT")
[ "${SKIP_TRAIN:-0}" = 1 ] || "$L" "${TRAIN[@]}"  # SKIP_TRAIN=1: OUT already holds that run
NET=$OUT
RECIPE="l2o ${TRAIN[*]}"
if [ "$NAME" = general ]; then
  # the floor of s lowered from -10 to -16, no retraining: long runs keep descending
  NET=$OUT/final
  .venv/bin/python scripts/adjust_step_size.py "$OUT" "$NET" --min-log-step -16
  RECIPE="$RECIPE && python scripts/adjust_step_size.py $OUT $NET --min-log-step -16"
fi
SUITE=()
if [ -n "${BASELINES_CARD:-}" ]; then
  # The tuned baselines of a shipped card (no suite folder needed): as BASELINES_FROM below.
  SCORE=(scripts/score_against_suite.py --card "$BASELINES_CARD" "$NET" --instances 100
         --json "$OUT/scores.json")
  .venv/bin/python "${SCORE[@]}"
  SUITE+=(--scores "$OUT/scores.json" "python ${SCORE[*]}")
elif [ -n "${BASELINES_FROM:-}" ]; then
  # The baselines of an earlier suite (tuned per setting; same test instances): only the new
  # network is evaluated, 100 instances per setting, minutes instead of the suite's hour.
  SCORE=(scripts/score_against_suite.py --suite "$BASELINES_FROM/suite-quadratic"
         --suite "$BASELINES_FROM/suite-digits-mlp" "$NET" --instances 100 --json "$OUT/scores.json")
  .venv/bin/python "${SCORE[@]}"
  SUITE+=(--scores "$OUT/scores.json" "python ${SCORE[*]}")
else
  for task in quadratic digits-mlp; do
    "$L" compare "$task" --optimizer "$NET" --generalization suite --trials 12 --tune-instances 8 \
      --instances 100 --out "$OUT/suite-$task"
    SUITE+=(--suite "$OUT/suite-$task" "l2o compare $task --optimizer $NET --generalization suite --trials 12 --tune-instances 8 --instances 100 --out $OUT/suite-$task")
  done
  SUITE+=(--compare "$OUT/suite-digits-mlp"
          --compare-command "l2o compare digits-mlp --optimizer $NET --generalization suite ...")
fi
if [ "$NAME" = general ]; then
  SUMMARY="mixture (quadratics, random MLPs, digits' meta-train half), trained for T=100 with unrolls of 20 to 1,000 steps, with the hypergradient rule for its step size: the default network of LearnedOptimizer"
  NOTE="Untuned: lr = output_scale 0.1 bounds each coordinate's step before the per-tensor step size e^s (-16 <= s <= 1), which the LSTM moves and which also falls whenever the last step overshot (the hypergradient rule, its weight learned). An LSTM per coordinate: 84 floats of state per parameter (Adam: 2), and a step costs several times Adam's (benchmarks/optimizer_overhead.py); general-fast is the cheap alternative."
else
  SUMMARY="mixture (quadratics, random MLPs, digits' meta-train half), trained for T=100 (unrolls up to 400): general's cheaper mlp alternative"
  NOTE="Untuned: lr = output_scale 0.01 (its step sizes are learned relative to it). 5 floats of state per parameter. Weak on ill-conditioned quadratics (see the card's table)."
fi
.venv/bin/python scripts/make_pretrained.py "$NAME" "$NET" --train-command "$RECIPE" \
  "${SUITE[@]}" --summary "$SUMMARY" --note "$NOTE"
