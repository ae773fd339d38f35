"""Pure placement: a read-only snapshot of nodes and pending tasks in, a plan out. No I/O."""

from corral.scheduler.placement import NodeView, Placement, Plan, TaskView, plan

__all__ = ["NodeView", "Placement", "Plan", "TaskView", "plan"]
