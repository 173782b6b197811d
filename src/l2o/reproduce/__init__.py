"""``l2o reproduce``: every experiment of the project, end to end, and a report to check it by."""

from l2o.reproduce.plan import Step, plan
from l2o.reproduce.runner import run_steps

__all__ = ["Step", "plan", "run_steps"]
