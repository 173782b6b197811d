#!/usr/bin/env bash
# The study behind README's "Learned optimizer kinds" table (issue 9): each kind meta-trained
# with its task's default budget, then compared with baselines tuned on validation at 1x and
# 10x the training horizon. About 1.5 hours on 2 cores (the rnnprop digits runs dominate).
set -euo pipefail
cd "$(dirname "$0")/.."
L=.venv/bin/l2o
S=${OUT:-runs/study}
for kind in mlp rnnprop; do
  $L train quadratic --set optimizer=$kind --out $S/q-$kind
  $L train digits-mlp --set optimizer=$kind --set val_every=5 --out $S/d-$kind
done
for task in quadratic digits-mlp; do
  short=$([ $task = quadratic ] && echo q || echo d)
  for steps in 100 1000; do
    if [ $steps = 100 ]; then trials=40; tune=32; else trials=20; tune=16; fi
    for kind in lstm mlp rnnprop; do
      opt=$S/$short-$kind
      [ $kind = lstm ] && opt=$task   # the pretrained paper LSTM (same default budget)
      $L compare $task --optimizer $opt --steps $steps --instances 100 --trials $trials \
        --tune-instances $tune --storage sqlite:///$S/tuning-$task.db --out $S/compare-$task-$steps-$kind
    done
  done
done
