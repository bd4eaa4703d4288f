"""Student's t, for the few-sample intervals a run fits: a soak's growth (``records.soak``) and a goal
pair's interleaved rounds (``analysis.paired``). At the bottom layer, so that both can use it."""

from __future__ import annotations

from statistics import NormalDist

# Student's t at 97.5% (two-sided 95%) for 1..30 degrees of freedom, from the tables.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile: the tables at 97.5% up to 30 degrees of freedom, else Hill's expansion in
    1/df (within 0.3% of the exact value for df >= 4): a mean of few samples has a wider interval than
    the normal one."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if p == 0.975 and df <= len(_T975):
        return _T975[df - 1]
    z = NormalDist().inv_cdf(p)
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def t975(df: int) -> float:
    """The 97.5% quantile (two-sided 95%) of Student's t with `df` degrees of freedom."""
    return t_quantile(0.975, df)
