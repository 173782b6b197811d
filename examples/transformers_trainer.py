"""``l2o.LearnedOptimizer`` in a Hugging Face ``transformers.Trainer``, checkpoints included.

    pip install 'l2o[test]'   # or: pip install transformers accelerate
    .venv/bin/python examples/transformers_trainer.py

The optimizer and a scheduler go in through ``Trainer(optimizers=(opt, scheduler))``. The
Trainer's own checkpoints (``save_steps``, ``train(resume_from_checkpoint=...)``) store the
optimizer's ``state_dict()``: the LSTM state of every parameter survives, so a run stopped at
a checkpoint and resumed ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

import l2o


class Classifier(nn.Module):
    """A digits-shaped MLP that returns its loss the way the Trainer expects."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(64, 20), nn.Sigmoid(), nn.Linear(20, 10))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.net(x)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


class Digitsish(Dataset):
    """Random digits-shaped examples (64 features, 10 classes), the same every time."""

    def __init__(self, n: int = 256) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def make_trainer(folder: Path, max_steps: int) -> tuple[Trainer, Classifier]:
    model = Classifier()
    opt = l2o.LearnedOptimizer(model.parameters(), l2o.load("digits-mlp"))
    # Any torch scheduler: it scales lr, the learned optimizer's output scale.
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1.0 + 0.01 * step))
    args = TrainingArguments(
        output_dir=str(folder),
        max_steps=max_steps,
        per_device_train_batch_size=32,
        save_strategy="steps",
        save_steps=4,
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=Digitsish(), optimizers=(opt, scheduler)
    )
    return trainer, model


def run(folder: Path) -> dict[str, torch.Tensor]:
    """Eight steps straight, and four + checkpoint + resume to eight in a fresh Trainer."""
    straight, model_a = make_trainer(folder / "straight", 8)
    straight.train()
    first, _ = make_trainer(folder / "stopped", 4)
    first.train()  # writes checkpoint-4 (model, optimizer.pt, scheduler.pt, RNG states)
    resumed, model_b = make_trainer(folder / "stopped", 8)
    resumed.train(resume_from_checkpoint=str(folder / "stopped" / "checkpoint-4"))
    return {"straight": model_a.net[0].weight, "resumed": model_b.net[0].weight}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        weights = run(Path(tmp))
    same = torch.equal(weights["straight"], weights["resumed"])
    print(f"8 steps straight == 4 steps, checkpoint, resume, 4 more: {same}")
