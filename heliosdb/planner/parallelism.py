"""Parallelism decisions: how many copies of each step run, and how.

- A fused stateless kernel runs as replicas (``parallel_kind = "replicas"``), opt-in:
  ``set_parallelism(n)`` on one of its steps or an explicit ``StreamingConfig(parallelism=)``.
  The ``replicas`` pass then cuts its stage.
- A keyed step runs with ``set_parallelism(n)`` or the config's effective parallelism: a
  tumbling or sliding event-time window as pre-aggregating replicas and one final merge
  (``"two_phase"``); sessions, processing-time windows and running aggregates as subtasks
  behind a hash exchange on the key columns (``"by_key"``), each told its :class:`Placement`.

Examples
--------
>>> placement(("k",), 4, 1)
Placement(subtask=1, parallelism=4, keys=('k',), key_types=())
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

from ..logical import Node, WindowAggregate
from ..operators.base import Placement


def fused_replicas(nodes: Iterable[Node], config) -> int:
    """Replicas of the fused kernel of ``nodes``: the largest parallelism one of them asks
    for, else an explicit ``StreamingConfig(parallelism=)``, else 1 (on 2 cores replicas
    measured slower than one kernel thread, so they are never implied)."""
    return max(n.parallelism or config.parallelism or 1 for n in nodes)


def keyed_parallelism(node: Node, config) -> int:
    """Subtasks (or pre-aggregating replicas) of keyed step ``node``."""
    return node.parallelism or config.effective_parallelism


def layout(node: Node, time_col: Optional[str], parallel: int) -> str:
    """How keyed step ``node`` runs: ``"one"`` operator, ``"two_phase"`` (replicas
    pre-aggregate, one final step merges their partials in order: event-time windows whose
    spec allows it), or ``"by_key"`` (a hash exchange to ``parallel`` subtasks)."""
    if parallel <= 1:
        return "one"
    step = node.step
    if isinstance(step, WindowAggregate) and time_col is not None and step.spec.two_phase:
        return "two_phase"
    return "by_key"


def placement(keys: Sequence[str], parallel: int, subtask: int, types: Sequence = ()) -> Placement:
    """Where by-key subtask ``subtask`` of ``parallel`` sits (rows hashed on ``keys``, cast to
    ``types`` first if given: a join's)."""
    return Placement(subtask=subtask, parallelism=parallel, keys=tuple(keys), key_types=tuple(types))
