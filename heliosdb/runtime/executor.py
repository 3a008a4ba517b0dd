"""The local executor: one thread per stage, bounded channels between them, made of parts.

Where each part lives (read in this order):

- :mod:`~heliosdb.runtime.physical`: the plan the planner hands over (:class:`PhysicalPlan`,
  :class:`PhysicalStage`) and the one place its fields become edges and inputs;
- :mod:`~heliosdb.runtime.batcher`: the source's thread, cutting rows into batches by size or
  timeout, sending ticks and starting checkpoints;
- :mod:`~heliosdb.runtime.edges`: where output goes (forward / broadcast, side outputs, hash
  exchange, round-robin to replicas), each edge one object with one ``send``;
- :mod:`~heliosdb.runtime.channel`: the bounded queue in front of a stage (backpressure);
- :mod:`~heliosdb.runtime.gate`: how input comes (barrier alignment and the minimum watermark
  over any number of inputs; replicas' numbered items; their answers put back in order);
- :mod:`~heliosdb.runtime.chain` and :mod:`~heliosdb.runtime.task`: the one task loop, running
  a stage's operators through their contract;
- :mod:`~heliosdb.runtime.job`: the job's lifecycle, and what the caller holds (``JobHandle``).

This module keeps the names other modules have always imported from here.
"""
from __future__ import annotations

from .batcher import Batcher, SourceTask
from .chain import Chain, StepFailed
from .job import Job, JobHandle, JobResult
from .physical import PhysicalPlan, PhysicalStage
from .task import StageTask

#: The old name of :class:`~heliosdb.runtime.chain.Chain` (the benchmarks use it).
_Chain = Chain

__all__ = ["Batcher", "Chain", "Job", "JobHandle", "JobResult", "PhysicalPlan", "PhysicalStage",
           "SourceTask", "StageTask", "StepFailed"]
