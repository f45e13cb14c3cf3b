"""Goodness of fit of sampled token counts against a next-token distribution."""

from __future__ import annotations

import numpy as np


def draws_fit_pvalue(counts, probs, *, min_expected: float = 5.0) -> float:
    """p-value of a G-test (log-likelihood ratio) that ``counts`` were drawn from ``probs``.

    Tokens of zero probability that were drawn give p = 0 (an impossible draw). Cells whose
    expected count is below ``min_expected`` are pooled into one, so the chi-square
    approximation holds. Needs scipy.
    """
    from scipy.stats import chi2

    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if counts.shape != probs.shape:
        raise ValueError(f"counts {counts.shape} and probs {probs.shape} differ in shape")
    n = counts.sum()
    if (counts[probs <= 0] > 0).any():
        return 0.0
    live = probs > 0
    expected = probs[live] / probs[live].sum() * n
    observed = counts[live]
    small = expected < min_expected
    if small.any():
        expected = np.append(expected[~small], expected[small].sum())
        observed = np.append(observed[~small], observed[small].sum())
    if len(expected) < 2:
        return 1.0
    nz = observed > 0
    g = 2.0 * np.sum(observed[nz] * np.log(observed[nz] / expected[nz]))
    return float(chi2.sf(g, len(expected) - 1))
