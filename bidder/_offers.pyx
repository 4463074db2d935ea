# cython: language_level=3, boundscheck=False, wraparound=False
"""The bid path's per-candidate pricing loop, compiled: ``price_offers`` (the candidates the
race prices), and the race's exponentials (``race_exponentials``). The loops over all candidates of
an imp are in bidder/_bounds.pyx.

The reference of ``price_offers`` is bidder/offers.py (read its docstrings for what they do);
this twin must give the same offers, drops and gate questions — tests/bidder/test_bidder_offers.py compares both.
Money is 64-bit here: floors are capped below 2**62 by the pipeline, values and bids never exceed a campaign's
goal price x 1000 or its maximum bid. Log-normal first-price shading is inlined
(``ShadingTable.bid``); a market model without log-normal parameters goes through
``bidder.pricing.price``, as in the reference.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport erfc, exp, floor as c_floor, log, isfinite
from libc.stdint cimport uint64_t

import numpy as _np

from bidder._values cimport race_exponential

from bidder.pricing import MIN_SIGMA as _MIN_SIGMA_PY, Priced, price as _price

cdef double MIN_SIGMA = _MIN_SIGMA_PY
cdef double SQRT2 = 1.4142135623730951


cdef inline long long _value(object e, double p_click, double p_install):
    """``bidder.scoring.value_cpm_micros`` of one candidate."""
    cdef str goal_type = e.campaign.goal_type
    cdef double p
    if goal_type == "CPM":
        return e.goal_price_micros
    p = p_click if goal_type == "CPC" else p_click * p_install
    if not (p > 0.0) or not isfinite(p):
        return 0
    cdef double goal_price = e.goal_price_micros
    return <long long>(goal_price * (p if p < 1.0 else 1.0) * 1000)


cdef inline double _tau(object table, dict points, double x):
    """``ShadingTable.tau``: the memoised grid points around x, interpolated."""
    cdef double u = x * 16.0
    cdef double k = c_floor(u)
    cdef object key = <long long>k
    cdef object t0 = points.get(key)
    if t0 is None:
        t0 = table._point(key)
    cdef object t1 = points.get(key + 1)
    if t1 is None:
        t1 = table._point(key + 1)
    cdef double a = t0
    cdef double b = t1
    return a + (u - k) * (b - a)


def price_offers(
    chosen,
    list predictions,
    segment_of,
    long long limit,
    double margin,
    long long min_bid,
    market,
    shader,
    allow,
    double wallclock,
    dict drops,
    list campaign_ids,
    list weights,
    list rows,
):
    cdef list candidates = chosen.candidates
    cdef list floors = chosen.floors
    cdef list types = chosen.auction_types
    cdef list positions = chosen.positions
    cdef Py_ssize_t n = len(candidates)
    if len(predictions) != n:
        raise ValueError("candidates and predictions differ in length")
    cdef Py_ssize_t i, j, k
    cdef long long v
    cdef tuple prediction
    # values, and the order to price them in: decreasing value, ties in candidate order
    # (a stable insertion sort: n is a few dozen)
    cdef long long[64] small_values
    cdef Py_ssize_t[64] small_order
    cdef long long *vals = small_values
    cdef Py_ssize_t *idx = small_order
    cdef bint heap = n > 64
    if heap:
        vals = <long long *>PyMem_Malloc(n * sizeof(long long))
        idx = <Py_ssize_t *>PyMem_Malloc(n * sizeof(Py_ssize_t))
        if vals == NULL or idx == NULL:
            PyMem_Free(vals)
            PyMem_Free(idx)
            raise MemoryError()
    try:
        for i in range(n):
            prediction = <tuple?>predictions[i]
            vals[i] = _value(candidates[i].entry, prediction[0], prediction[1])
        for i in range(n):
            v = vals[i]
            j = i
            while j > 0 and vals[idx[j - 1]] < v:
                idx[j] = idx[j - 1]
                j -= 1
            idx[j] = i
        _price_in_order(
            chosen, candidates, floors, types, positions, predictions, vals, idx, n,
            segment_of, limit, margin, min_bid, market, shader, allow, wallclock, drops,
            campaign_ids, weights, rows,
        )
    finally:
        if heap:
            PyMem_Free(vals)
            PyMem_Free(idx)


cdef _price_in_order(
    chosen, list candidates, list floors, list types, list positions, list predictions,
    long long *vals, Py_ssize_t *idx, Py_ssize_t n,
    segment_of, long long limit, double margin, long long min_bid, market, shader, allow,
    double wallclock, dict drops, list campaign_ids, list weights, list rows,
):
    cdef dict segments = {}
    cdef Py_ssize_t offered = 0, r, k
    cdef long long value, floor, max_bid, bid, lo
    cdef double mu, sigma, table_sigma, x, p_win, gain
    cdef object cand, e, segment, params, table, priced, campaign, in_currency, fx_num
    cdef tuple known
    cdef object auction_type
    cdef dict points
    cdef tuple prediction
    cdef bint has_bid
    for r in range(n):
        if offered >= limit:
            break
        k = idx[r]
        cand = candidates[k]
        floor = floors[k]
        auction_type = types[k]
        value = vals[k]
        e = cand.entry
        known = segments.get(auction_type)
        if known is None:
            # the segment and, for first price, its shading table: once per auction type
            segment = segment_of(auction_type)
            params = segment[1]
            table = shader.table(params[1]) if params is not None and auction_type == 1 else None
            known = segments[auction_type] = (segment, table)
        segment, table = known
        params = segment[1]
        max_bid = e.max_bid_micros
        if params is None:  # not log-normal: the reference's own pricing
            priced = _price(
                value, floor, max_bid, auction_type, margin, min_bid, market, segment[0],
                None, shader,
            )
            if not isinstance(priced, Priced):
                drops[priced] = drops.get(priced, 0) + 1
                continue
            bid = priced.price
            p_win = priced.p_win
        else:
            # bidder.pricing.price with (mu, sigma) known, first price through the shader
            mu = params[0]
            sigma = params[1]
            if max_bid < floor:
                drops["floor"] = drops.get("floor", 0) + 1
                continue
            if value <= 0:
                drops["low_value"] = drops.get("low_value", 0) + 1
                continue
            has_bid = True
            if auction_type == 3:
                bid = floor
                has_bid = value > floor
            elif auction_type == 1:
                # Shader.bid -> ShadingTable.bid
                table_sigma = table.sigma
                lo = floor if floor > 1 else 1
                if value <= lo:
                    has_bid = False
                else:
                    x = (log(<double>value) - mu) / table_sigma
                    if not (-1e4 < x < 1e4):
                        has_bid = False
                    else:
                        points = table._points
                        bid = <long long>exp(mu + table_sigma * _tau(table, points, x))
                        if bid < lo:
                            bid = lo
                        if bid > value - 1:
                            bid = value - 1
            else:
                bid = <long long>(value * (1.0 - margin))
            if not has_bid:
                drops["floor"] = drops.get("floor", 0) + 1
                continue
            if max_bid < bid:
                bid = max_bid
            if bid < floor:
                drops["floor"] = drops.get("floor", 0) + 1
                continue
            if bid < min_bid or bid <= 0:
                drops["low_value"] = drops.get("low_value", 0) + 1
                continue
            if sigma < MIN_SIGMA:
                sigma = MIN_SIGMA
            p_win = 0.5 * erfc(-((log(<double>bid) - mu) / sigma) / SQRT2)
        campaign = e.campaign
        fx_num = e.fx_num
        in_currency = bid
        if fx_num != e.fx_den:
            in_currency = in_currency * fx_num // e.fx_den
        if not allow(campaign, in_currency, wallclock, p_win):
            drops["paced"] = drops.get("paced", 0) + 1
            continue
        prediction = <tuple?>predictions[k]
        campaign_ids.append(campaign.id)
        gain = <double>(value - bid)
        weights.append(p_win * gain if value - bid > 0 and p_win > 0.0 else 0.0)
        rows.append(
            (cand, positions[k], floor, auction_type, value, bid, p_win, prediction[0],
             prediction[1], segment[0])
        )
        offered += 1


def race_exponentials(object seed, Py_ssize_t n):
    """The E_j = -ln(u_j) of ``bidder.race.exponentials`` for j in 0..n-1
    (``bidder._values.race_exponential``), in one loop: integers, exact conversions and the C
    library's logarithm, the one ``math.log`` calls, so the reference gives the same
    doubles."""
    out = _np.empty(n, dtype=_np.float64)
    cdef double[::1] e = out
    cdef uint64_t s = <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)
    cdef Py_ssize_t j
    for j in range(n):
        e[j] = race_exponential(s, j)
    return out
