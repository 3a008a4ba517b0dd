"""Logging: standard :mod:`logging` under ``heliosdb.*``, with structured fields.

The engine logs job start and end, checkpoints and restores at INFO, slow batches (over
``StreamingConfig(slow_batch_warning=)``) at WARNING with their duration, failures at ERROR;
never anything per event or per batch at INFO.  Each record carries its context as attributes
(:data:`FIELDS`: ``job``, ``operator``, ``epoch``, ``duration_s``, ``rows`` where they apply),
which :class:`StructuredFormatter` prints as ``key=value`` pairs or JSON lines.

>>> import io, logging
>>> stream = io.StringIO()
>>> handler = configure(level=logging.INFO, stream=stream)
>>> logging.getLogger("heliosdb.doc").info("checkpoint done", extra={"job": "j", "epoch": 3})
>>> stream.getvalue()
'INFO heliosdb.doc: checkpoint done job=j epoch=3\\n'
>>> logging.getLogger("heliosdb").removeHandler(handler)
>>> logging.getLogger("heliosdb").setLevel(logging.NOTSET)
"""
from __future__ import annotations

import json
import logging
from typing import IO, Optional

#: Structured fields the engine attaches to its records (when they apply).
FIELDS = ("job", "operator", "epoch", "duration_s", "rows")


class StructuredFormatter(logging.Formatter):
    """Appends the record's structured fields: `` job=... operator=...`` or, with
    ``json_lines=True``, one JSON object per record (message, level, logger, time, fields)."""

    def __init__(self, fmt: str = "%(levelname)s %(name)s: %(message)s", json_lines: bool = False):
        super().__init__(fmt)
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: getattr(record, k) for k in FIELDS if hasattr(record, k)}
        if self.json_lines:
            out = {"time": record.created, "level": record.levelname, "logger": record.name,
                   "message": record.getMessage(), **fields}
            if record.exc_info:
                out["exception"] = self.formatException(record.exc_info)
            return json.dumps(out, default=str)
        text = super().format(record)
        if fields:
            text += " " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in fields.items())
        return text


def configure(level: int = logging.INFO, json_lines: bool = False,
              stream: Optional[IO[str]] = None) -> logging.Handler:
    """Send the engine's logs (``heliosdb.*``) to ``stream`` (stderr) through a
    :class:`StructuredFormatter`; returns the handler (remove it to undo)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(StructuredFormatter(json_lines=json_lines))
    logger = logging.getLogger("heliosdb")
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
