# cython: language_level=3
"""What the compiled loops that score, bound and refine values share (``bidder._bounds``,
``bidder._scorer``, ``bidder._offers``), one definition inlined into each: the model's
sigmoid, the value of one creative position in CPM micros from its goal and predictions
(``bidder.scoring.value_cpm_micros``), and the race's draws (``bidder.race``: the uniform of
candidate j and a lower bound of its exponential without a logarithm), and the rate bound the
race's first weight bounds take without an exponential per candidate (``bidder.bounds``)."""
cimport cython
from libc.math cimport exp, isfinite, log
from libc.string cimport memcpy
from libc.stdint cimport int8_t, int64_t, uint64_t


cdef inline double logistic(double z) noexcept nogil:
    """The sigmoid of a head's sum, clamped to +-60 (``bidder.scorer._sigmoid``, the same
    operations)."""
    if z < -60.0:
        z = -60.0
    elif z > 60.0:
        z = 60.0
    return 1.0 / (1.0 + exp(-z))


cdef inline double capped(double x) noexcept nogil:
    """x, at most 1e300 (finite, so that a product with 0 is 0; a NaN gives 1e300)."""
    return x if x < 1e300 else 1e300


cdef inline double capped_exp(double x) noexcept nogil:
    """``capped(exp(x))``: ``bidder.bounds.python_capped_exp``."""
    return capped(exp(x))


@cython.cdivision(True)  # 1 + L >= 1: never a division by zero to check
cdef inline double rate_bound(double run_factor, double request_factor) noexcept nogil:
    """An upper bound of the sigmoid of a sum t + c (the scorer's, clamped at +-60) from
    ``capped_exp(-t)`` and ``capped_exp(-c)``: 1 / (1 + L), L = their product shrunk by
    2**-40 (below exp(-(t + c)) whatever the rounding of the exponentials and the product),
    at most exp(60) shrunk (the clamp; a NaN gives that too): ``bidder.bounds.EXP_SHRINK``,
    ``EXP60_LOW`` and ``python_rate_bounds``, which prove it."""
    cdef double low = (run_factor * request_factor) * 0.9999999999990905
    if not low < 1.1420073898146455e26:
        low = 1.1420073898146455e26
    return 1.0 / (1.0 + low)


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


cdef inline double race_uniform(uint64_t seed, Py_ssize_t j) noexcept nogil:
    """u_j in (0, 1]: SplitMix64 of seed + (j + 1) x golden, its 53 high bits + 1, over 2**53
    (``bidder.race.python_uniforms``; every step exact after the integers)."""
    cdef uint64_t z = <uint64_t>(j + 1) * 0x9E3779B97F4A7C15ULL + seed
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    z = z ^ (z >> 31)
    return (<double>(z >> 11) + 1.0) * (1.0 / 9007199254740992.0)


cdef inline double race_exponential(uint64_t seed, Py_ssize_t j) noexcept nogil:
    """E_j = -ln(u_j) with the C library's logarithm (``bidder.race.exponential_at``)."""
    return -log(race_uniform(seed, j))


cdef inline double exponential_floor(double u) noexcept nogil:
    """A lower bound of -ln(u), u in (0, 1], without a logarithm
    (``bidder.race.python_exponential_floors``, the same operations): u = m 2**e with m in
    [sqrt(1/2), sqrt(2)) and x = m - 1 (exact), ln(1 + x) <= x - x**2/2 + x**3/3 (for x > 0
    the series alternates with shrinking terms, for x < 0 every term is negative), ln 2
    rounded down; less 1e-12 for the rounding of these few operations, at least 0. Within
    x**4/4 of -ln(u): 0.0074 at most, a relative 3e-7 at -ln(u) = 0.01. The exponent and
    mantissa are read from the bits (u >= 2**-53 is normal: what ``frexp`` gives), and the
    halving of m chosen without a branch (it goes either way at random); x**3 is multiplied
    by 1/3 rounded rather than divided by 3 (a division is the loop's slowest step; the
    difference, under 1e-17, is far inside the 1e-12)."""
    cdef uint64_t bits
    memcpy(&bits, &u, 8)
    cdef int e = <int>((bits >> 52) & 0x7FF) - 1022
    bits = (bits & 0x000FFFFFFFFFFFFFULL) | 0x3FE0000000000000ULL  # m in [0.5, 1)
    cdef double m, x, a
    memcpy(&m, &bits, 8)
    cdef int low = m < 0.7071067811865476
    m = m * (1.0 + <double>low)
    e = e - low
    x = m - 1.0
    a = -(<double>e * 0.6931471805599453 + ((x - (x * x) * 0.5) + ((x * x) * x) * 0.3333333333333333)) - 1e-12
    return a if a > 0.0 else 0.0
