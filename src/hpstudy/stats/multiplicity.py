"""Multiple comparisons: Holm's step-down adjustment of a family of p-values.

    >>> holm([0.01, 0.04, 0.03, 0.005])    # [0.03, 0.06, 0.06, 0.02]

Holm (1979) controls the family-wise error rate (the chance of even one false "beats" in the
family) under any dependence between the tests, which matters here: the paper's claims share
configurations and seeds, so their tests are correlated. It is uniformly more powerful than
Bonferroni and needs no assumption Hochberg or Benjamini-Hochberg would (independence or
positive dependence, and a false discovery rate is the wrong promise for a verdict).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values in the input order; nan entries (no test) are left out of the
    family and stay nan.

    Sorted ascending, the i-th smallest of m is multiplied by (m - i), made monotone (never
    below the one before it) and capped at 1."""
    tested = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    m = len(tested)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
