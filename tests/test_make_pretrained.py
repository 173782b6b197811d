"""scripts/make_pretrained.py: the card's training summary keeps what the run measured."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location(
    "make_pretrained", ROOT / "scripts/make_pretrained.py"
)
script = importlib.util.module_from_spec(SPEC)
sys.modules["card"] = script
SPEC.loader.exec_module(script)


def test_the_validation_curve_keeps_losses_far_below_one(tmp_path) -> None:
    """A long-horizon run validates at 1e-12: the card must not round that to 0."""
    rows = ["iteration,meta_loss,val_loss,grad_norm,skipped,wall_time"]
    rows += [
        "1,5.0,nan,1.0,0,10.0",
        "2,2.0,1.6508730141e-12,1.0,0,20.5",
        "3,1.0,2.7e-05,1.0,0,31.0",
    ]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    summary = script.training_summary(tmp_path)
    assert summary["val_curve"] == [[2, 1.65e-12], [3, 2.7e-05]]
    assert (summary["best_iteration"], summary["best_val_loss"]) == (2, 1.6508730141e-12)
    assert (summary["iterations"], summary["wall_time_s"], summary["meta_loss_first"]) == (
        3,
        31.0,
        5.0,
    )


def test_a_network_chosen_by_select_validated_is_named_in_the_card(tmp_path) -> None:
    rows = ["iteration,meta_loss,val_loss,grad_norm,skipped,wall_time", "20,1.0,1e-9,1.0,0,5.0"]
    rows.append("40,1.0,1e-3,1.0,0,9.0")
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    selection = {"script": "scripts/select_validated.py", "iteration": 40, "instances": 8}
    record = script.training_record(tmp_path, {"selection": selection})
    assert (record["best_iteration"], record["kept_iteration"]) == (20, 40)
    assert record["selection"] == selection
    assert "kept_iteration" not in script.training_record(tmp_path, {})
