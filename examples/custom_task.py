"""Your own task, registered, meta-trained with l2o and compared with Adam: 25 lines of code.

    .venv/bin/python examples/custom_task.py        # ~1 minute

A task is a family of instances drawn by (split, index); a batch of instances holds one θ row per
instance and returns one loss per row. Gradients come from autograd unless you give them.
"""

import torch

import l2o
from l2o.baselines import BASELINES
from l2o.evaluate import BaselineRunner, LearnedRunner, evaluate
from l2o.tasks import TaskBatch, TaskFamily, get_task, instance_generator, register_task


class LeastSquaresBatch(TaskBatch):
    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.X, self.y, (self.size, _, self.dim) = X, y, X.shape

    def init_params(self) -> torch.Tensor:
        return torch.zeros(self.size, self.dim)

    def loss(self, theta: torch.Tensor, step: int) -> torch.Tensor:  # (B, dim) → (B,)
        return (torch.bmm(self.X, theta.unsqueeze(-1)).squeeze(-1) - self.y).pow(2).mean(-1)


@register_task("least-squares")
class LeastSquares(TaskFamily):
    """Linear regression on 20 random points in 8 dimensions, a new dataset per instance."""

    dim = 8

    def sample(self, split: str, indices: list[int]) -> LeastSquaresBatch:
        gens = [instance_generator("least-squares", split, i) for i in indices]
        X = torch.stack([torch.randn(20, 8, generator=g) * torch.logspace(0, 1, 8) for g in gens])
        return LeastSquaresBatch(X, torch.stack([torch.randn(20, generator=g) for g in gens]))


config = l2o.TrainConfig(task="least-squares", iterations=60, batch_size=32, horizon=50)
net, history = l2o.meta_train(config)
adam = [BaselineRunner(BASELINES["adam"], {"lr": lr}, f"adam lr={lr}") for lr in (0.03, 0.1, 0.3)]
result = evaluate(get_task("least-squares"), [LearnedRunner(net), *adam], steps=50, instances=200)
for name, curve in result.curves.items():
    print(f"{name:<12} mean loss after 50 steps on 200 test instances: {curve[-1].mean():.4f}")
