"""Stage cuts: where a stage (one thread) starts, and how stages connect.

A stage starts at each child of the source, at each branch (a step with several children),
before a keyed operator (so the stateless kernel and the keyed aggregation run on different
cores; a stage holding only a watermark assigner keeps it), at each by-key subtask and the
merge after them, and at each side output (``late_output()``).

Examples
--------
>>> stages = []
>>> a = new_stage(stages)
>>> b = new_stage(stages, after=a)
>>> [s.name for s in stages], stages[a].children
(['stage-0', 'stage-1'], [1])
"""
from __future__ import annotations

from typing import List, Optional

from ..operators.base import Operator
from ..operators.watermark import WatermarkAssigner
from ..runtime.physical import PhysicalStage


def new_stage(stages: List[PhysicalStage], after: Optional[int] = None,
              name: Optional[str] = None) -> int:
    """Add a stage (named ``stage-<index>`` unless ``name``), fed by stage ``after`` if given."""
    stages.append(PhysicalStage(name or f"stage-{len(stages)}", []))
    idx = len(stages) - 1
    if after is not None:
        stages[after].children.append(idx)
    return idx


def cut_before_keyed(ops: List[Operator]) -> bool:
    """Whether a keyed operator after ``ops`` starts a stage of its own: yes, unless the stage
    holds nothing or only a watermark assigner (whose thread would have little else to do).

    >>> cut_before_keyed([]), cut_before_keyed([Operator()])
    (False, True)
    """
    return len(ops) > 1 or bool(ops and not isinstance(ops[0], WatermarkAssigner))


def side_stage(stages: List[PhysicalStage], producers: List[int], tag: str, name: str) -> int:
    """A stage reading side output ``tag`` of every stage in ``producers``."""
    idx = new_stage(stages, name=name)
    stages[idx].n_inputs = len(producers)
    for p in producers:
        stages[p].side_children.setdefault(tag, []).append(idx)
    return idx


def merge_stage(stages: List[PhysicalStage], producers: List[int], name: str) -> int:
    """A stage merging the output of ``producers`` (the subtasks of a keyed step)."""
    idx = new_stage(stages, name=name)
    stages[idx].n_inputs = len(producers)
    for p in producers:
        stages[p].children.append(idx)
    return idx
