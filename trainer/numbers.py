"""The one parser for numbers we did not type ourselves: the environment (TF_CONFIG ports,
JOB_COMPLETION_INDEX, IMDB_TRAIN_* settings) and files in the store (a foreign `_LEASE`).

`str.isdigit()` and `int()` accept Unicode digits ('²' passes isdigit and fails int, '٣'
is 3), `float()` accepts 'nan', 'inf' and '1e308', and either gives an exception that is
no one's line. Here a number is ASCII, finite and within the caller's bounds, or it is
`error(message)` naming what was read and what is valid. Dependency-free.
"""

from __future__ import annotations

import math
import re

_INT = re.compile(r"[+-]?[0-9]{1,18}\Z")
_FLOAT = re.compile(r"[+-]?([0-9]{1,18}(\.[0-9]{0,18})?|\.[0-9]{1,18})([eE][+-]?[0-9]{1,3})?\Z")


def _shown(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def bounded_int(
    raw: object, what: str, lo: int, hi: int, error: type[Exception] = ValueError
) -> int:
    """`raw` (an int, not a bool, or ASCII digits) as an int from `lo` to `hi`.

    Raises:
        error: anything else, with one line naming `what`, the value and the bounds.
    """
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and _INT.match(raw.strip()):
        value = int(raw.strip())
    if value is None or not lo <= value <= hi:
        raise error(f"invalid {what} {_shown(raw)}: expected an integer from {lo} to {hi}")
    return value


def bounded_float(
    raw: object, what: str, lo: float, hi: float, error: type[Exception] = ValueError
) -> float:
    """`raw` (an int or float, not a bool, or an ASCII decimal) as a finite float from `lo`
    to `hi` (nan, inf and 1e308 are refused, never passed on to time arithmetic).

    Raises:
        error: anything else, with one line naming `what`, the value and the bounds.
    """
    value: float | None = None
    if isinstance(raw, float):
        value = raw
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = float(raw) if abs(raw) < 2**1000 else math.inf  # float() would overflow
    elif isinstance(raw, str) and _FLOAT.match(raw.strip()):
        value = float(raw.strip())
    if value is None or not math.isfinite(value) or not lo <= value <= hi:
        raise error(f"invalid {what} {_shown(raw)}: expected a number from {lo:g} to {hi:g}")
    return value
