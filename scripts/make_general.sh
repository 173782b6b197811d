#!/usr/bin/env bash
# Train, evaluate and install the shipped `general` learned optimizer (CPU, one thread).
#
#   bash scripts/make_general.sh            # ~4 min of training + the suite (tens of minutes)
#
# 1. meta-train an `mlp` on the task distribution of configs/general.toml
#    (quadratics, random MLPs with and without parameter/loss rescaling, the digits MLP's
#    meta-train half with ReLU and with sigmoid; no other real dataset), log meta-loss, log-uniform unroll
#    lengths 20..400, validation at 200 steps; 300 iterations of 16 instances at meta_lr 1e-3
#    (150 × 8 at 3e-3 gave a noisier meta-gradient: best validation 0.117 against 0.034, and
#    worse 1,000-step losses; docs/general-study.md);
# 2. the generalisation suite of `l2o compare --generalization suite` on the quadratic and the
#    digits MLP, `general` untuned (its default lr) against baselines tuned per setting;
# 3. install it as src/l2o/pretrained/general.* with its card.
set -euo pipefail
cd "$(dirname "$0")/.."
L=.venv/bin/l2o
OUT=${OUT:-runs/general}
TRAIN=(train mixture --config configs/general.toml --set batch_size=16 --set iterations=300 --set horizon=100
       --set meta_lr=0.001 --set horizon_sampling=log_uniform --set max_horizon=400 --set val_horizon=200
       --set val_every=20 --set val_instances=32 --set checkpoint_every=20 --out "$OUT")
"$L" "${TRAIN[@]}"
SUITE=()
for task in quadratic digits-mlp; do
  "$L" compare "$task" --optimizer "$OUT" --generalization suite --trials 12 --tune-instances 8 \
    --instances 100 --out "$OUT/suite-$task"
  SUITE+=(--suite "$OUT/suite-$task" "l2o compare $task --optimizer $OUT --generalization suite --trials 12 --tune-instances 8 --instances 100 --out $OUT/suite-$task")
done
.venv/bin/python scripts/make_pretrained.py general "$OUT" --train-command "l2o ${TRAIN[*]}" \
  --compare "$OUT/suite-digits-mlp" \
  --compare-command "l2o compare digits-mlp --optimizer $OUT --generalization suite ..." \
  "${SUITE[@]}" \
  --summary "mixture (quadratics, random MLPs, digits' meta-train half), trained for T=100 (unrolls up to 400): the default network of LearnedOptimizer" \
  --note "Untuned: lr = output_scale 0.01 (its step sizes are learned relative to it). Weak on ill-conditioned quadratics (see the card's table)."
