"""``l2o.LearnedOptimizer`` inside PyTorch Lightning, checkpoints included.

    pip install 'l2o[test]'   # or: pip install lightning
    .venv/bin/python examples/lightning_module.py

``configure_optimizers`` returns the learned optimizer like any ``torch.optim`` optimizer.
Lightning's own checkpoint (``trainer.save_checkpoint`` / ``fit(ckpt_path=...)``) stores its
``state_dict()``: the LSTM state of every parameter survives, so two epochs in one go and one
epoch + a restart from the checkpoint + one more epoch end with the same weights.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import l2o


class Classifier(L.LightningModule):
    """A digits-shaped MLP (64 → 20 → 10) trained with a pretrained learned optimizer."""

    def __init__(self, optimizer: str = "digits-mlp") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(64, 20), nn.Sigmoid(), nn.Linear(20, 10))
        self.optimizer_name = optimizer  # the network is loaded in configure_optimizers

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # The learned optimizer's own weights stay outside the LightningModule (not trained,
        # not in its state_dict): only the model's parameters are optimized.
        return l2o.LearnedOptimizer(self.model.parameters(), l2o.load(self.optimizer_name))


def data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 64, generator=g), torch.randint(0, 10, (256,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=32)  # fixed order: runs are comparable


def trainer(epochs: int) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def run(folder: Path) -> dict[str, torch.Tensor]:
    """Two epochs straight, and one + checkpoint + one in a fresh module and trainer."""
    straight = Classifier()
    trainer(2).fit(straight, data())

    first = Classifier()
    t = trainer(1)
    t.fit(first, data())
    t.save_checkpoint(folder / "epoch1.ckpt")
    resumed = Classifier()
    t2 = trainer(2)
    t2.fit(resumed, data(), ckpt_path=folder / "epoch1.ckpt")
    state = t2.optimizers[0].state[resumed.model[0].weight]
    assert {"h0", "c0", "h1", "c1", "step"} <= set(state), "the LSTM state was not restored"
    return {"straight": straight.model[0].weight, "resumed": resumed.model[0].weight}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        weights = run(Path(tmp))
    same = torch.equal(weights["straight"], weights["resumed"])
    print(f"two epochs straight == one epoch, checkpoint, restart, one epoch: {same}")
