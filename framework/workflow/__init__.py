"""Workflows: chains, groups, chords and graphs of steps, built from task types and checked before they run.

Owns the shapes (:func:`chain`, :func:`group`, :func:`chord`, :class:`Workflow`), the check that each step's
input takes its dependencies' result types, and the plan a client stores (:class:`Plan`). Pure: imports only
the task model; the client stores a plan (:mod:`framework.client.workflows`), the worker runs its steps.
"""

from framework.workflow.shapes import Plan, PlannedStep, StepHandle, Workflow, chain, chord, group

__all__ = ("Plan", "PlannedStep", "StepHandle", "Workflow", "chain", "chord", "group")
