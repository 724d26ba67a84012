"""Checks at the public boundary: each failure is a ValueError that names the argument."""
import math

from amp.backend import namespace


#: elements of a large array checked at a time, so that the check adds O(1) memory
_CHECK_BLOCK = 1 << 20


def check_finite_array(name, a):
    """`a` is a floating array without NaN or Inf (checked in row blocks, no full-size temporary)."""
    xp = namespace(a)
    if not xp.isdtype(a.dtype, "real floating"):
        raise ValueError(f"{name} must be a real floating-point array, got dtype {a.dtype}")
    rows = max(1, _CHECK_BLOCK // max(1, math.prod(a.shape[1:]))) if a.ndim > 1 else max(1, a.shape[0] if a.ndim else 1)
    for r0 in range(0, a.shape[0] if a.ndim else 1, rows):
        if not bool(xp.all(xp.isfinite(a[r0:r0 + rows] if a.ndim else a))):
            raise ValueError(f"{name} contains NaN or Inf")


def _as_float(name, value):
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number, got {value!r}") from err


def check_positive(name, value):
    """`value` is a finite number > 0."""
    value = _as_float(name, value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_unit_interval(name, value, open_left=False):
    """`value` lies in [0, 1] (or (0, 1] when open_left)."""
    value = _as_float(name, value)
    ok = (0.0 < value <= 1.0) if open_left else (0.0 <= value <= 1.0)
    if not ok:
        raise ValueError(f"{name} must lie in {'(0' if open_left else '[0'}, 1], got {value}")
    return value


def check_count(name, value, minimum=0):
    """`value` is an integer >= minimum (an integral float such as 1e3 is accepted)."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= minimum
    except (TypeError, ValueError, OverflowError):  # None, NaN, Inf, strings, arrays
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_compatible(prior, channel, tokens):
    """The prior's k, the channel's k and its number of tokens agree with the data."""
    if prior.k != channel.k:
        raise ValueError(f"prior has k = {prior.k} but channel has k = {channel.k}")
    if channel.tokens != tokens:
        raise ValueError(f"channel expects {channel.tokens} token(s) per sample, the data have {tokens}")
