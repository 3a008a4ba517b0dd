"""The methods of a ``Stream`` that configure its source: micro-batching and byte formats.

They apply to a stream right after ``env.from_...()`` / ``env.kafka_source()`` and return a new
stream of the same source, reconfigured (:class:`~heliosdb.stream.Stream` inherits them).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, Optional, TypeVar

import pyarrow as pa

from .config import Duration, to_nanos
from .errors import ConfigError, PlanError
from .logical import Node, Source

S = TypeVar("S", bound="SourceMethods")


class SourceMethods:
    """Mixed into :class:`~heliosdb.stream.Stream`: ``_env`` and ``_node`` are the stream's."""

    _env: Any
    _node: Node

    def _source_node(self: S, step: Source) -> S:
        """A stream of this source reconfigured as ``step`` (the same name)."""
        return type(self)(self._env, Node(step, None, self._node.name))  # type: ignore[call-arg]

    # -- source options ------------------------------------------------------------------------
    def with_batch_size(self: S, n: int) -> S:
        """Cut the source's micro-batches at ``n`` rows (sources only).

        >>> import heliosdb as hdb
        >>> sizes = []
        >>> env = hdb.StreamEnvironment()
        >>> _ = env.generate(count=10).with_batch_size(4).inspect(lambda b: sizes.append(b.num_rows)).collect()
        >>> sizes
        [4, 4, 2]
        """
        self._require_source("with_batch_size")
        return self._source_node(replace(self._node.step, batch_size=n))

    def with_batch_timeout(self: S, timeout: Duration) -> S:
        """Emit a partial micro-batch once its first row has waited ``timeout`` (sources only).

        >>> import heliosdb as hdb
        >>> from datetime import timedelta
        >>> s = hdb.StreamEnvironment().from_iterable([{"x": 1}]).with_batch_timeout(timedelta(milliseconds=5))
        >>> s.collect().num_rows
        1
        """
        self._require_source("with_batch_timeout")
        ns = to_nanos(timeout, "with_batch_timeout()")
        if ns <= 0:
            raise ConfigError(f"with_batch_timeout() must be positive, got {timeout!r}")
        return self._source_node(replace(self._node.step, batch_timeout_ns=ns))

    def _require_source(self, what: str) -> None:
        if not isinstance(self._node.step, Source):
            raise PlanError(f"{what}() applies to a source; call it right after env.from_...()")

    # -- byte sources: formats (decoded a whole batch at a time; see heliosdb.formats) ----------
    def _with_source(self: S, what: str, change) -> S:
        self._require_source(what)
        src = self._node.step.source
        if not src.decodes_bytes:
            raise PlanError(f"{what}() applies to a source of bytes such as kafka_source(); "
                            f"step {self._node.name!r} is a {src.kind} source")
        return self._source_node(replace(self._node.step, source=change(src)))

    def deserialize_json(self: S, schema: pa.Schema) -> S:
        """Decode each message as a JSON object with the fields of ``schema``.

        >>> import heliosdb as hdb, pyarrow as pa
        >>> s = hdb.StreamEnvironment().kafka_source("t").deserialize_json(pa.schema([("n", pa.int64())]))
        >>> s.schema.field("n").type
        DataType(int64)
        """
        from .formats.json import JsonFormat

        return self._with_source("deserialize_json", lambda s: s.with_format(JsonFormat(schema)))

    def deserialize_msgpack(self: S, schema: pa.Schema) -> S:
        """Decode each message as a MessagePack map with the fields of ``schema``.

        >>> import heliosdb as hdb, pyarrow as pa
        >>> hdb.StreamEnvironment().kafka_source("t").deserialize_msgpack(pa.schema([("n", pa.int64())])).schema.names[0]
        'n'
        """
        from .formats.msgpack import MsgpackFormat

        return self._with_source("deserialize_msgpack", lambda s: s.with_format(MsgpackFormat(schema)))

    def deserialize_avro(self: S, schema: Any, wire_format: str = "plain",
                         writer_schemas: Optional[Dict[int, Any]] = None) -> S:
        """Decode each message as an Avro record of ``schema`` (a dict or JSON string):
        ``wire_format="plain"`` or ``"confluent"`` (magic byte, schema id; ``writer_schemas``
        maps the accepted ids to their schemas).

        >>> import heliosdb as hdb
        >>> avro = {"type": "record", "name": "E", "fields": [{"name": "n", "type": "long"}]}
        >>> hdb.StreamEnvironment().kafka_source("t").deserialize_avro(avro, "confluent").schema.names[0]
        'n'
        """
        from .formats.avro import AvroFormat

        fmt = AvroFormat(schema, wire_format=wire_format, writer_schemas=writer_schemas)
        return self._with_source("deserialize_avro", lambda s: s.with_format(fmt))

    def deserialize_protobuf(self: S, message_class: Any) -> S:
        """Decode each message as a ``message_class`` protobuf message.

        >>> import heliosdb as hdb
        >>> from google.protobuf import timestamp_pb2
        >>> hdb.StreamEnvironment().kafka_source("t").deserialize_protobuf(timestamp_pb2.Timestamp).schema.names[:2]
        ['seconds', 'nanos']
        """
        from .formats.protobuf import ProtobufFormat

        fmt = ProtobufFormat(message_class)
        return self._with_source("deserialize_protobuf", lambda s: s.with_format(fmt))

    def deserialize_arrow(self: S, schema: Optional[pa.Schema] = None) -> S:
        """Decode each message as an Arrow IPC stream (any number of rows per message).
        Without ``schema``, the first message's schema is read when the job is planned.

        >>> import heliosdb as hdb, pyarrow as pa
        >>> hdb.StreamEnvironment().kafka_source("t").deserialize_arrow(pa.schema([("x", pa.float64())])).schema.names[0]
        'x'
        """
        from .formats.arrow_ipc import ArrowIpcFormat

        return self._with_source("deserialize_arrow", lambda s: s.with_format(ArrowIpcFormat(schema)))

