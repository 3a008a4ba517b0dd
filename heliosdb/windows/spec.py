"""The base of window specs, and the registry through which the API finds them.

A window spec is a frozen dataclass validated in ``__post_init__`` (as in Bytewax): it says
*which* windows an event belongs to, and builds the logic that knows it, a windower
(``heliosdb.operators.windower``).  Everything else the engine asks of a window kind follows
from the windower: the window operator (:meth:`WindowSpec.build`), whether replicas can
pre-aggregate it (:attr:`WindowSpec.two_phase`, :meth:`WindowSpec.pre_aggregate`), which
watermark values matter to it (:meth:`WindowSpec.grid`).

Adding a window kind is adding one module to this package with its spec (a subclass of
:class:`WindowSpec`, decorated with :func:`register`) and its windower: the package imports
every module in it, and ``heliosdb.windows`` and ``heliosdb`` export every registered spec.
See ``cumulate.py``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, TypeVar

import pyarrow as pa

from ..errors import ConfigError
from ..operators.keyedbase import Aggs
from ..operators.preagg import PreAggregate
from ..operators.window import window_operator
from ..operators.windower import Windower

if TYPE_CHECKING:  # pragma: no cover
    from ..operators.base import Operator

#: Every registered window spec, by class name (what ``heliosdb`` exports).
SPECS: Dict[str, type] = {}

S = TypeVar("S", bound=type)


def register(cls: S) -> S:
    """Class decorator: make window spec ``cls`` known to the API (``heliosdb.<Name>``,
    ``KeyedStream.window``).

    Examples
    --------
    >>> from heliosdb.windows import SPECS, TumblingWindow
    >>> SPECS["TumblingWindow"] is TumblingWindow
    True
    """
    if not (isinstance(cls, type) and issubclass(cls, WindowSpec)):
        raise ConfigError(f"@register takes a subclass of WindowSpec, got {cls!r}")
    other = SPECS.get(cls.__name__)
    if other is not None and other is not cls:
        raise ConfigError(
            f"two window specs are named {cls.__name__!r} ({other.__module__} and {cls.__module__}); "
            "rename one of them"
        )
    SPECS[cls.__name__] = cls
    return cls


class WindowSpec:
    """The base of every window spec (see the module docstring).

    A subclass implements :meth:`windower` and :meth:`state_span`; the rest follows.

    Examples
    --------
    >>> from heliosdb.windows import SlidingWindow
    >>> w = SlidingWindow.of(10, 5)
    >>> w.two_phase, w.grid(0), w.state_span()
    (True, (10000000000, 5000000000, 0), (10000000000, 'window size'))
    """

    def windower(self) -> Windower:
        """A new windower for one operator instance (sessions keep state in it)."""
        raise NotImplementedError

    def state_span(self) -> Tuple[int, str]:
        """How long (ns) a key's state lasts, and what that is called, for explain()'s state
        estimate (e.g. ``(size_ns, "window size")``)."""
        raise NotImplementedError

    @property
    def two_phase(self) -> bool:
        """Whether, on event time with parallelism, replicas pre-aggregate batches for one
        final merge (else the window runs partitioned by key)."""
        return self.windower().two_phase

    def grid(self, lateness_ns: int) -> Optional[Tuple[int, int, int]]:
        """The watermark values that matter to these windows (``kernels.window.window_grid``
        entry), or None: every value does."""
        return self.windower().grid(lateness_ns)

    def build(self, name: str, schema: pa.Schema, keys: List[str], time: Optional[str],
              aggs: Aggs, max_state_bytes: int, allowed_lateness_ns: int = 0,
              backend=None) -> "Operator":
        """The window operator of step ``name`` over ``schema``: event time ``time`` (None:
        processing time), state on ``backend`` (a ``config.StateBackend``; None: memory)."""
        return window_operator(name, schema, keys, self, time, aggs, max_state_bytes,
                               allowed_lateness_ns, backend)

    def pre_aggregate(self, name: str, schema: pa.Schema, keys: List[str], time: str,
                      aggs: Aggs, bound: Optional[int]) -> "Operator":
        """The replicas' step of a two-phase window (only when :attr:`two_phase`); ``bound``
        is the max out-of-orderness of a watermark step after the replicas (None: none)."""
        return PreAggregate(name, schema, keys, self, time, aggs, bound)

