"""Every exception HeliosDB raises lives here.

All of them derive from :class:`HeliosError`, so ``except hdb.HeliosError`` catches anything the
engine itself raises.  Messages name the step, the column or value that was wrong, and the fix.
"""
from __future__ import annotations


class HeliosError(Exception):
    """Base class of every error raised by HeliosDB."""


class ConfigError(HeliosError, ValueError):
    """A configuration value is out of range or of the wrong type."""


class SchemaError(HeliosError, KeyError):
    """A column is missing, or has a type the step cannot use."""

    def __str__(self) -> str:  # KeyError would repr() the message; show it as written
        return str(self.args[0]) if self.args else ""


class PlanError(HeliosError, ValueError):
    """The pipeline cannot be built as written (e.g. aggregate without key_by)."""


class ExecutionError(HeliosError, RuntimeError):
    """A stage failed while the job was running; the original error is chained."""


class DataError(HeliosError, ValueError):
    """A record or value cannot be processed (e.g. a timestamp outside the supported range)."""
