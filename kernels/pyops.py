"""Python's integer semantics as Numba scalar functions, for kernels compiled from Python code.

Generated kernels call these (Numba inlines them) where int64 arithmetic would differ from
Python's: true division of two integers rounded once (as Python does, not twice through two
float conversions), overflow tests (Python's integers never overflow, so a compiled function
must notice when an int64 result would be wrong), integer powers, and the exact comparison of
an integer with a float.  ``kernels.reference`` holds the plain Python twin of each.
"""
from __future__ import annotations

import math

import numpy as np

from ._jit import jit

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_TWO53 = 2**53


@jit
def int_truediv(a, b):
    """``a / b`` for int64 ``a``, ``b`` correctly rounded to float64, as Python computes it.

    A zero divisor follows float division (+-inf or NaN); callers check for it first.

    >>> int_truediv(2**53 + 1, 3) == (2**53 + 1) / 3
    True
    """
    a = np.int64(a)
    b = np.int64(b)
    if b == 0:
        return np.float64(a) / np.float64(b)
    if a == 0 or (-_TWO53 <= a <= _TWO53 and -_TWO53 <= b <= _TWO53):
        return np.float64(a) / np.float64(b)      # both exact: one rounding, as in Python
    negative = (a < 0) != (b < 0)
    ua = np.uint64(a) if a >= 0 else _U0 - np.uint64(a)     # |a|, also for INT64_MIN
    ub = np.uint64(b) if b >= 0 else _U0 - np.uint64(b)
    q = ua // ub
    r = ua - q * ub
    e = 0
    limit = np.uint64(1) << np.uint64(54)
    while q < limit:                 # long division until the quotient has 55 significant bits
        r2 = r << _U1                # r < ub <= 2**63, so this cannot overflow
        q = q << _U1
        if r2 >= ub:
            q = q | _U1
            r2 = r2 - ub
        r = r2
        e -= 1
    bits = 0
    t = q
    while t != _U0:
        t = t >> _U1
        bits += 1
    shift = np.uint64(bits - 53)
    low = q & ((_U1 << shift) - _U1)
    q = q >> shift
    e += bits - 53
    half = _U1 << (shift - _U1)
    if low > half or (low == half and (r != _U0 or (q & _U1) == _U1)):
        q = q + _U1                  # round half to even, the remainder breaking ties
    res = math.ldexp(np.float64(q), e)
    return -res if negative else res


@jit
def add_overflows(a, b):
    """True if ``a + b`` (int64) does not fit in int64.

    >>> add_overflows(2**63 - 1, 1), add_overflows(-5, 3)
    (True, False)
    """
    a = np.int64(a)
    b = np.int64(b)
    r = np.int64(np.uint64(a) + np.uint64(b))
    return ((a ^ r) & (b ^ r)) < 0


@jit
def sub_overflows(a, b):
    """True if ``a - b`` (int64) does not fit in int64.

    >>> sub_overflows(-2**63, 1), sub_overflows(5, 3)
    (True, False)
    """
    a = np.int64(a)
    b = np.int64(b)
    r = np.int64(np.uint64(a) - np.uint64(b))
    return ((a ^ b) & (a ^ r)) < 0


@jit
def mul_overflows(a, b):
    """True if ``a * b`` (int64) does not fit in int64.

    >>> mul_overflows(2**31, 2**31), mul_overflows(2**32, 2**31)
    (False, True)
    """
    a = np.int64(a)
    b = np.int64(b)
    if a == 0 or b == 0:
        return False
    if a == -1:
        return b == np.int64(-(2**63))
    if b == -1:
        return a == np.int64(-(2**63))
    r = np.int64(np.uint64(a) * np.uint64(b))
    return r // b != a or r % b != 0


@jit
def ipow(a, b):
    """``a ** b`` for int64 ``a`` and ``b >= 0``, wrapping on overflow (0 for ``b < 0``).

    >>> ipow(3, 4), ipow(-2, 63)
    (81, -9223372036854775808)
    """
    a = np.int64(a)
    b = np.int64(b)
    if b < 0:
        return np.int64(0)
    result = np.uint64(1)
    base = np.uint64(a)
    while b > 0:
        if b & 1:
            result = result * base
        b >>= 1
        if b > 0:
            base = base * base
    return np.int64(result)


@jit
def ipow_overflows(a, b):
    """True if ``a ** b`` (``b >= 0``) does not fit in int64.

    >>> ipow_overflows(2, 62), ipow_overflows(2, 63), ipow_overflows(-2, 63)
    (False, True, False)
    """
    a = np.int64(a)
    b = np.int64(b)
    if b < 0 or a == 0 or a == 1 or b == 0:
        return False
    if a == -1:
        return False
    result = np.int64(1)
    base = a
    while b > 0:
        if b & 1:
            if mul_overflows(result, base):
                return True
            result = np.int64(np.uint64(result) * np.uint64(base))
        b >>= 1
        if b > 0:
            if mul_overflows(base, base):
                return True
            base = np.int64(np.uint64(base) * np.uint64(base))
    return False


@jit
def cmp_int_float(a, f):
    """Compare int64 ``a`` with float64 ``f`` exactly (as Python does, not through float(a)):
    -1 if a < f, 0 if equal, 1 if a > f, 2 if f is NaN.

    >>> cmp_int_float(2**53 + 1, float(2**53)), cmp_int_float(3, 3.5), cmp_int_float(1, float("nan"))
    (1, -1, 2)
    """
    a = np.int64(a)
    f = np.float64(f)
    if f != f:
        return 2
    if f >= 9.223372036854775808e18:
        return -1
    if f < -9.223372036854775808e18:
        return 1
    fl = np.floor(f)
    fi = np.int64(fl)
    if a < fi:
        return -1
    if a > fi:
        return 1
    return -1 if f > fl else 0
