# cython: language_level=3
"""What the compiled loops that score, bound and refine values share (``bidder._bounds``,
``bidder._scorer``), one definition inlined into each: the model's sigmoid, and the value of
one creative position in CPM micros from its goal and predictions
(``bidder.scoring.value_cpm_micros``)."""
from libc.math cimport exp, isfinite
from libc.stdint cimport int8_t, int64_t


cdef inline double logistic(double z) noexcept nogil:
    """The sigmoid of a head's sum, clamped to +-60 (``bidder.scorer._sigmoid``, the same
    operations)."""
    if z < -60.0:
        z = -60.0
    elif z > 60.0:
        z = 60.0
    return 1.0 / (1.0 + exp(-z))


cdef inline int64_t goal_value(
    int8_t code, int64_t price, double p_click, double p_install
) noexcept nogil:
    """``code`` 0: a CPM goal, its price; 1: per click, price x p_click x 1000; else per
    install, price x p_click x p_install x 1000 (the rate capped at 1, 0 when not positive)."""
    cdef double p
    if code == 0:
        return price
    p = p_click if code == 1 else p_click * p_install
    if not (p > 0.0) or not isfinite(p):
        return 0
    return <int64_t>(<double>price * (p if p < 1.0 else 1.0) * 1000)
