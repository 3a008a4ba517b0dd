"""Logging: standard :mod:`logging` under ``heliosdb.*``, with structured fields.

The engine logs job start and end, checkpoints and restores at INFO, slow batches (over
``StreamingConfig(slow_batch_warning=)``) at WARNING with their duration (the first of each
step in a job, then a count when the job ends), failures at ERROR, once each; never anything per
event or per batch at INFO.  Each record carries its context as attributes (:data:`FIELDS`:
``job``, ``operator``, ``epoch``, ``duration_s``, ``rows`` where they apply), which
:class:`StructuredFormatter` prints as ``key=value`` pairs or JSON lines.

As a library should, the engine prints nothing by itself: the ``heliosdb`` logger has a
:class:`logging.NullHandler`, so until the application configures logging (``logging.basicConfig``,
or :func:`configure` for the engine's records alone) no record reaches stderr, a notebook
included.  Errors are raised to the caller as well; what is only logged (a dropped late event,
a checkpoint that fell back to the previous one, a slow step) is seen once logging is set up.

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
    :class:`StructuredFormatter`; returns the handler (remove it to undo).

    Calling it again (a notebook cell run twice) replaces the handler it added before, so every
    record is still printed once.

    >>> import io, logging
    >>> first = configure(stream=io.StringIO())
    >>> second = configure(stream=io.StringIO())
    >>> [h for h in logging.getLogger("heliosdb").handlers if h in (first, second)] == [second]
    True
    >>> logging.getLogger("heliosdb").removeHandler(second)
    """
    global _configured
    handler = logging.StreamHandler(stream)
    handler.setFormatter(StructuredFormatter(json_lines=json_lines))
    logger = logging.getLogger("heliosdb")
    if _configured is not None:
        logger.removeHandler(_configured)
    logger.addHandler(handler)
    logger.setLevel(level)
    _configured = handler
    return handler


#: The handler :func:`configure` added last (replaced when it is called again).
_configured: Optional[logging.Handler] = None

# A library's convention: nothing printed unless the application configures logging (without
# a handler on the way, logging's last resort would print warnings to stderr).
logging.getLogger("heliosdb").addHandler(logging.NullHandler())
