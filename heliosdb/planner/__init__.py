"""The planner: a logical plan (:mod:`heliosdb.logical`) -> physical stages of operators.

``heliosdb.plan.build`` runs the passes in this order:

- ``schema``: the output schema of every step, typed once; errors name the step.
- ``pruning``: the columns some later step reads; the source reads only those, and fused
  kernels drop the rest as early as they can.
- ``lower``: one function per kind of step turns it into operators (``fusion`` makes one
  fused kernel of consecutive stateless steps; ``keyed`` lowers windows and running
  aggregates), placed in stages (``stages``: where a thread starts) with the parallelism
  ``parallelism`` decides (replicas, two-phase windows, hash exchanges).
- ``replicas``: stages holding replicated operators are cut into their replicas.
- ``explain``: the stages as text, and the state memory estimate.

``context`` holds what the passes share while one job is planned.
"""
