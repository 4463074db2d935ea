# cython: language_level=3, boundscheck=False, wraparound=False
"""The bid path's loops over all candidates of an imp, compiled: ``select_runs`` (its
campaigns among those of the imp's shape), ``imp_bounds`` and ``entry_bounds`` (floors,
lowest bids and weight bounds in one pass), ``KeyOrder`` (the race's order of them) and
``best_values`` (the race's refined bounds). Their references are bidder/candidates.py,
bidder/bounds.py and bidder/race.py; tests/bidder/test_bidder_bounds.py compares each pair,
bit for bit.

These loops keep the GIL: each takes tens of microseconds on the event loop's thread, and
letting a worker thread (a portfolio reread) take the GIL in between would make the request
wait for its switch interval.
"""
from libc.math cimport INFINITY, isfinite
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int8_t, int32_t, int64_t, uint64_t

import numpy as _np

from bidder._values cimport capped, capped_exp, exponential_floor, goal_value, race_exponential
from bidder._values cimport race_uniform, rate_bound


cdef inline int _bit_count(uint64_t x) noexcept nogil:
    """The set bits of x, by adding neighbouring fields: portable, where a popcount
    instruction would need the build to assume one (``-mpopcnt``)."""
    x = x - ((x >> 1) & 0x5555555555555555ULL)
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL
    return <int>((x * 0x0101010101010101ULL) >> 56)


cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil  # GCC and Clang, on every target


def select_runs(
    const uint64_t[::1] wanted,
    const Py_ssize_t[::1] run_entries,
    const uint64_t[::1] entry_words,
    const int32_t[::1] word_rows,
    const int64_t[::1] max_bid_col,
    const int64_t[::1] id_col,
):
    """``bidder.candidates.python_select_runs`` compiled: the runs r (increasing) whose entry
    ``run_entries[r]`` has its bit set in ``wanted`` (entry e: bit e & 63 of word e >> 6),
    with the entry, maximum bid and campaign id of each (columns by entry).

    The first runs, whose entries increase, are read from the shape's bitmap of their
    entries (``entry_words``) and the runs before each word (``word_rows``, its last the
    number of those runs; ``bidder.candidates.run_words``): the request's words ANDed with
    the bitmap's give the selected entries, and each one's row is the runs before its word
    and its bit, so a call costs the words and the runs selected rather than every run of
    the shape. The runs after those (an updated index's, ``bidder.index_update``) are read
    one by one and come after them."""
    cdef Py_ssize_t n = run_entries.shape[0], cols = max_bid_col.shape[0]
    cdef Py_ssize_t words = entry_words.shape[0], limit = wanted.shape[0] * 64
    cdef Py_ssize_t head, r, e, w, bit, m = 0, k = 0
    cdef uint64_t x, present
    if id_col.shape[0] != cols:
        raise ValueError("the columns differ in length")
    if word_rows.shape[0] != words + 1 or not 0 <= word_rows[words] <= n:
        raise ValueError("the bitmap's rows do not fit the runs")
    head = word_rows[words]
    if cols < limit:
        limit = cols
    # the bitmap's entries at or past the limit, in its words from the one holding it
    for w in range(limit >> 6, words):
        present = entry_words[w]
        if w == limit >> 6:
            present &= ~((<uint64_t>1 << (limit & 63)) - 1)
        if present:
            raise IndexError("an entry outside the mask or the columns")
    if words > (limit + 63) >> 6:
        words = (limit + 63) >> 6
    for r in range(head, n):
        e = run_entries[r]
        if e < 0 or e >= limit:
            raise IndexError("an entry outside the mask or the columns")
        m += (wanted[e >> 6] >> (e & 63)) & 1
    for w in range(words):
        m += _bit_count(wanted[w] & entry_words[w])
    rows_arr = _np.empty(m, dtype=_np.intp)
    entries_arr = _np.empty(m, dtype=_np.intp)
    bids_arr = _np.empty(m, dtype=_np.int64)
    ids_arr = _np.empty(m, dtype=_np.int64)
    cdef Py_ssize_t[::1] rows = rows_arr
    cdef Py_ssize_t[::1] entries = entries_arr
    cdef int64_t[::1] bids = bids_arr
    cdef int64_t[::1] ids = ids_arr
    for w in range(words):
        present = entry_words[w]
        x = wanted[w] & present
        while x:
            bit = __builtin_ctzll(x)
            e = (w << 6) + bit
            rows[k] = word_rows[w] + _bit_count(present & ((<uint64_t>1 << bit) - 1))
            entries[k] = e
            bids[k] = max_bid_col[e]
            ids[k] = id_col[e]
            k += 1
            x &= x - 1
    for r in range(head, n):
        e = run_entries[r]
        if (wanted[e >> 6] >> (e & 63)) & 1:
            rows[k] = r
            entries[k] = e
            bids[k] = max_bid_col[e]
            ids[k] = id_col[e]
            k += 1
    return rows_arr, entries_arr, bids_arr, ids_arr


cdef inline int64_t _value_bound(int8_t code, int64_t price, double rate) noexcept nogil:
    """A goal's value from an upper bound of the rate it reads, + 1 (``bidder.bounds
    .weight_bounds``, before the lowest bid): a CPM goal's is its price, without a branch;
    the rate at most 1."""
    cdef int64_t value
    if rate > 1.0:
        rate = 1.0
    value = <int64_t>((<double>price) * rate * 1000.0) + 1
    return price if code == 0 else value


def exp_factors(const double[:, ::1] tops):
    """Per row of largest static sums (t_click, t_install): ``capped_exp(-t_click)`` and that
    times ``capped_exp(-t_install)``, capped (``bidder.bounds.python_exp_factors``): what a
    candidate's rate bounds need of its sums, computed once per imp shape."""
    cdef Py_ssize_t n = tops.shape[0], r
    if tops.shape[1] != 2:
        raise ValueError("the tops need two columns")
    out_arr = _np.empty((n, 2), dtype=_np.float64)
    cdef double[:, ::1] out = out_arr
    cdef double click
    for r in range(n):
        click = capped_exp(-tops[r, 0])
        out[r, 0] = click
        out[r, 1] = capped(click * capped_exp(-tops[r, 1]))
    return out_arr


def imp_bounds(
    const Py_ssize_t[::1] flat,
    const Py_ssize_t[::1] starts,
    const int64_t[::1] max_bids,
    const int64_t[::1] floors,
    const double[:, ::1] table,
    bint logistic,
    double click,
    double install,
    const int8_t[::1] goal_codes,
    const int64_t[::1] goal_prices,
    int64_t low_min,
):
    """``bidder.bounds.python_imp_bounds`` compiled: which candidates survive their floor, the
    lowest bid of each, and an upper bound of its auction weight over all its creatives
    (``flat[starts[g]:starts[g + 1]]``, rows of ``table`` and of the goal arrays): each
    candidate's largest row in one pass, then ``entry_bounds`` over those (their
    ``exp_factors`` when ``logistic``).
    Returns (kept, lows, bounds, below): ``below`` counts the candidates whose maximum bid is
    under a known floor (a floor < 0, a deal's in an unknown currency, is left out of both)."""
    cdef Py_ssize_t m = max_bids.shape[0], rows = table.shape[0], g, p, pos, head
    cdef Py_ssize_t total = flat.shape[0]
    if starts.shape[0] != m + 1 or floors.shape[0] != m:
        raise ValueError("starts, maximum bids and floors do not fit")
    if table.shape[1] != 2 or goal_codes.shape[0] < rows or goal_prices.shape[0] < rows:
        raise ValueError("the table and the goal arrays do not fit")
    for g in range(m):
        if not 0 <= starts[g] < starts[g + 1] <= total:
            raise ValueError("every candidate needs at least one position")
    for p in range(total):
        if not 0 <= flat[p] < rows:
            raise IndexError("position out of range")
    # each candidate's largest row over its positions, and its goal (its first creative's:
    # a campaign's creatives share it); then ``entry_bounds`` over those, one row each
    tops_arr = _np.empty((m, 2), dtype=_np.float64)
    codes_arr = _np.empty(m, dtype=_np.int8)
    prices_arr = _np.empty(m, dtype=_np.int64)
    cdef double[:, ::1] tops = tops_arr
    cdef int8_t[::1] codes = codes_arr
    cdef int64_t[::1] prices = prices_arr
    for g in range(m):
        head = flat[starts[g]]
        tops[g, 0] = table[head, 0]
        tops[g, 1] = table[head, 1]
        for p in range(starts[g] + 1, starts[g + 1]):
            pos = flat[p]
            if table[pos, 0] > tops[g, 0]:
                tops[g, 0] = table[pos, 0]
            if table[pos, 1] > tops[g, 1]:
                tops[g, 1] = table[pos, 1]
        codes[g] = goal_codes[head]
        prices[g] = goal_prices[head]
    return entry_bounds(
        _np.arange(m, dtype=_np.intp), max_bids, floors,
        exp_factors(tops_arr) if logistic else tops_arr, logistic, click, install, codes_arr,
        prices_arr, low_min,
    )


def entry_bounds(
    const Py_ssize_t[::1] entries,
    const int64_t[::1] max_bids,
    const int64_t[::1] floors,
    const double[:, ::1] bound_rows,
    bint logistic,
    double click,
    double install,
    const int8_t[::1] goal_codes,
    const int64_t[::1] goal_prices,
    int64_t low_min,
):
    """``imp_bounds`` for candidates given by entry (campaign) rather than by positions: row
    ``entries[g]`` of ``bound_rows`` holds what bounds the rates of the entry's creatives
    eligible for the imp (``exp_factors`` of their largest static sums when ``logistic``,
    else their largest predictions), and of the goal arrays its goal; ``click`` and
    ``install`` are the request's bounding sums of the two heads (shared sum, crosses' bound
    and slack; their factors as ``bidder.bounds.python_request_factors``). Every array read is
    indexed by entry, so a request reads a few hundred KiB in increasing order at 20,000
    campaigns instead of gathering rows of every position's table. One floor (``floors`` of
    length 1) is every candidate's: an imp without deals."""
    cdef Py_ssize_t m = max_bids.shape[0], rows = bound_rows.shape[0], g, entry
    cdef Py_ssize_t n = 0, below = 0, step = 1
    if floors.shape[0] == 1:
        step = 0
    if entries.shape[0] != m or (step and floors.shape[0] != m):
        raise ValueError("entries, maximum bids and floors differ in length")
    if bound_rows.shape[1] != 2 or goal_codes.shape[0] < rows or goal_prices.shape[0] < rows:
        raise ValueError("the bound rows and the goal arrays do not fit")
    # the request's factor by goal code (a CPM goal reads none; its slot is the click's)
    cdef double factors[3]
    factors[1] = capped_exp(-click)
    factors[0], factors[2] = factors[1], capped_exp(-(click + install))
    kept_arr = _np.empty(m, dtype=_np.intp)
    lows_arr = _np.empty(m, dtype=_np.int64)
    bounds_arr = _np.empty(m, dtype=_np.float64)
    cdef Py_ssize_t[::1] kept = kept_arr
    cdef int64_t[::1] lows = lows_arr
    cdef double[::1] bounds = bounds_arr
    cdef int64_t floor, low, price, b
    cdef int8_t code
    cdef double rate
    for g in range(m):
        entry = entries[g]
        if not 0 <= entry < rows:
            raise IndexError("entry out of range")
        floor = floors[g * step]
        if floor < 0:
            continue
        if max_bids[g] < floor:
            below += 1
            continue
        low = floor if floor > low_min else low_min
        code = goal_codes[entry]
        if not 0 <= code <= 2:  # read by code below
            raise ValueError("a goal code past 2")
        price = goal_prices[entry]
        if logistic:  # without a branch on the goal: its row and factor by code
            rate = rate_bound(bound_rows[entry, code >> 1], factors[code])
        else:  # the largest predictions: an install goal's rate their product
            rate = bound_rows[entry, 0]
            if code == 2:
                rate = rate * bound_rows[entry, 1]
        b = _value_bound(code, price, rate) - low
        kept[n] = g
        lows[n] = low
        bounds[n] = <double>(b if b > 0 else 0)
        n += 1
    return kept_arr[:n], lows_arr[:n], bounds_arr[:n], below


cdef enum:
    _TARGET = 64  # candidates a batch of the key order aims at (the race takes ~70 an imp at 20,000)
    _SAMPLES = 256  # keys sampled to choose a batch's upper key


cdef struct _Order:
    # the candidates with a finite key, by candidate index (increasing ``idx``): each key is
    # nums / dens, divided only when a batch may hold it (a division is the pass's slowest
    # step, and a race takes a few dozen of thousands)
    double* nums
    double* dens
    Py_ssize_t* idx
    Py_ssize_t finite
    Py_ssize_t left  # keys not handed out yet: those above ``below``
    double below
    bint started  # ``below`` holds (before the first batch nothing is handed out)
    double* bkeys  # the current batch, in (key, index) order, from ``bpos``
    Py_ssize_t* bidx
    Py_ssize_t bsize
    Py_ssize_t bpos


cdef int _order_alloc(_Order* o, Py_ssize_t n) except -1:
    o.nums, o.dens, o.idx, o.bkeys, o.bidx = NULL, NULL, NULL, NULL, NULL
    o.finite, o.left, o.below, o.started, o.bsize, o.bpos = 0, 0, 0.0, False, 0, 0
    # one block for the five arrays (each of n + 1 eight-byte items): one allocation an imp
    # rather than five of tens of KiB at 20,000 campaigns, each a walk of the allocator's bins
    cdef char* block = <char*>PyMem_Malloc(5 * (n + 1) * sizeof(double))
    if block == NULL:
        raise MemoryError()
    o.nums = <double*>block
    o.dens = <double*>(block + (n + 1) * sizeof(double))
    o.idx = <Py_ssize_t*>(block + 2 * (n + 1) * sizeof(double))
    o.bkeys = <double*>(block + 3 * (n + 1) * sizeof(double))
    o.bidx = <Py_ssize_t*>(block + 4 * (n + 1) * sizeof(double))
    return 0


cdef int _order_init(_Order* o, const double[::1] exps, const double[::1] bounds) except -1:
    """The order of (E_j / b_j, j) over the candidates with b_j > 0 and a finite key (the
    arrays freed by ``_order_free``)."""
    cdef Py_ssize_t n = exps.shape[0], j, m = 0
    if bounds.shape[0] != n:
        raise ValueError("exponentials and bounds differ in length")
    _order_alloc(o, n)
    for j in range(n):
        if bounds[j] > 0.0 and isfinite(exps[j] / bounds[j]):
            o.nums[m] = exps[j]
            o.dens[m] = bounds[j]
            o.idx[m] = j
            m += 1
    o.finite = o.left = m
    return 0


cdef inline double _first_key(uint64_t seed, Py_ssize_t j, double bound) noexcept nogil:
    """Candidate j's first key: a lower bound of E_j without a logarithm over its bound, inf
    where the bound is not positive or the key not finite."""
    cdef double key
    if not bound > 0.0:
        return INFINITY
    key = exponential_floor(race_uniform(seed, j)) / bound
    return key if isfinite(key) else INFINITY


cdef int _order_init_first(_Order* o, uint64_t seed, const double[::1] bounds) except -1:
    """The order of the race's first keys (``first_keys``) over the candidates with a finite
    one. The floor of E_j is at most 37 (u_j >= 2**-53), so its key is finite wherever the
    bound is at least 1e-290: only a smaller bound is divided here."""
    cdef Py_ssize_t n = bounds.shape[0], j, m = 0
    cdef double floor, bound
    _order_alloc(o, n)
    for j in range(n):
        bound = bounds[j]
        if not bound > 0.0:
            continue
        floor = exponential_floor(race_uniform(seed, j))
        if bound < 1e-290 and not isfinite(floor / bound):
            continue
        o.nums[m] = floor
        o.dens[m] = bound
        o.idx[m] = j
        m += 1
    o.finite = o.left = m
    return 0


cdef void _next_batch(_Order* o) noexcept:
    """The next batch: every key above the last batch's upper key and at most a new one,
    chosen from a sample of the keys left so that about ``_TARGET`` fall in (all that are
    left when few are), in (key, index) order. Each batch is a pass over the candidates with
    a store and no branch each, keeping those whose key may be at most the upper one (a
    product, no division: nums <= upper x dens, the upper key raised by 2**-50 for the
    rounding of the key's division), then the keys of those, the exact test, and a sort of
    the batch: the race takes a few dozen candidates of thousands, where building a heap of
    all of them would cost each key its unpredictable comparisons."""
    cdef Py_ssize_t n = o.finite, i, c = 0, kept = 0, step, q, have = 0, t
    cdef double upper = INFINITY, k, low = o.below, loose
    cdef bint started = o.started
    cdef double best[_TARGET]
    if o.left > 2 * _TARGET:
        # the q-th smallest of a sample of the keys left is the upper key, q in proportion
        step = n // _SAMPLES if n > _SAMPLES else 1
        q = (_TARGET * (n // step)) // o.left
        if q < 1:
            q = 1
        elif q > _TARGET:
            q = _TARGET
        i = 0
        while i < n:
            k = o.nums[i] / o.dens[i]
            i += step
            if started and k <= low:
                continue
            if have < q:  # the q smallest sampled, sorted, by insertion
                t = have
                have += 1
            elif k < best[q - 1]:
                t = q - 1
            else:
                continue
            while t > 0 and best[t - 1] > k:
                best[t] = best[t - 1]
                t -= 1
            best[t] = k
        if have == q:
            upper = best[q - 1]
    # fl(a / b) <= upper implies a <= upper (1 + 2**-52) b, below fl(fl(upper (1 + 2**-50)) b);
    # left out only when surely above (a NaN product, inf x 0, is kept and tested exactly)
    loose = upper * (1.0 + 8.881784197001252e-16)
    for i in range(n):
        o.bidx[c] = i
        c += not (o.nums[i] > loose * o.dens[i])
    for t in range(c):
        i = o.bidx[t]
        k = o.nums[i] / o.dens[i]
        if k <= upper and (not started or k > low):
            o.bkeys[kept] = k
            o.bidx[kept] = o.idx[i]  # kept <= t: a slot already read
            kept += 1
    c = kept
    # in (key, index) order: a heap of the batch popped to its end
    t = c // 2
    while t > 0:
        t -= 1
        _sift_down(o.bkeys, o.bidx, c, t)
    i = c
    while i > 1:
        i -= 1
        k, q = o.bkeys[0], o.bidx[0]
        o.bkeys[0], o.bidx[0] = o.bkeys[i], o.bidx[i]
        o.bkeys[i], o.bidx[i] = k, q
        _sift_down(o.bkeys, o.bidx, i, 0)
    # popped smallest first into the back: reverse into increasing order
    i, t = 0, c - 1
    while i < t:
        o.bkeys[i], o.bkeys[t] = o.bkeys[t], o.bkeys[i]
        o.bidx[i], o.bidx[t] = o.bidx[t], o.bidx[i]
        i += 1
        t -= 1
    o.below, o.started = upper, True
    o.left -= c
    o.bsize, o.bpos = c, 0


def exponential_floors(const double[::1] u):
    """``bidder._values.exponential_floor`` of each u in (0, 1] (its reference is
    ``bidder.race.python_exponential_floors``)."""
    cdef Py_ssize_t n = u.shape[0], j
    out_arr = _np.empty(n, dtype=_np.float64)
    cdef double[::1] out = out_arr
    for j in range(n):
        if not 0.0 < u[j] <= 1.0:
            raise ValueError("u outside (0, 1]")
        out[j] = exponential_floor(u[j])
    return out_arr


def first_keys(object seed, const double[::1] bounds):
    """The race's first key of each candidate: a lower bound of its exponential E_j without a
    logarithm (``bidder._values.exponential_floor``) over its bound b_j, inf where b_j <= 0
    or the key is not finite (``bidder.race.python_first_keys``)."""
    cdef Py_ssize_t n = bounds.shape[0], j
    cdef uint64_t s = <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)
    out_arr = _np.empty(n, dtype=_np.float64)
    cdef double[::1] out = out_arr
    for j in range(n):
        out[j] = _first_key(s, j, bounds[j])
    return out_arr


cdef inline bint _order_pop(_Order* o, double* key, Py_ssize_t* j) noexcept:
    """The next candidate and its key into ``key``, ``j``; False when none is left."""
    if o.bpos >= o.bsize:
        if o.left <= 0:
            return False
        _next_batch(o)
    key[0] = o.bkeys[o.bpos]
    j[0] = o.bidx[o.bpos]
    o.bpos += 1
    return True


cdef void _order_free(_Order* o) noexcept:
    PyMem_Free(o.nums)  # the block of all five (``_order_alloc``)
    o.nums, o.dens, o.idx, o.bkeys, o.bidx = NULL, NULL, NULL, NULL, NULL
    o.left, o.bsize = 0, 0


cdef class KeyOrder:
    """The candidates with a positive weight bound in increasing (E_j / b_j, j) order, as
    ``bidder.race._ascending`` gives them from a stable sort, a batch at a time (the order
    the race loop takes its first keys in): the race usually takes a few dozen, so ordering
    all would be wasted."""

    cdef _Order _order

    def __cinit__(self, const double[::1] exps, const double[::1] bounds):
        _order_init(&self._order, exps, bounds)

    def __dealloc__(self):
        _order_free(&self._order)

    @property
    def finite(self):
        return self._order.finite

    def take(self, Py_ssize_t count):
        """The next (at most) ``count`` candidates and their keys, in order."""
        cdef list js = [], ks = []
        cdef double key
        cdef Py_ssize_t j
        while count > 0 and _order_pop(&self._order, &key, &j):
            js.append(j)
            ks.append(key)
            count -= 1
        return js, ks


cdef inline bint _less(double* keys, Py_ssize_t* idx, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return keys[a] < keys[b] or (keys[a] == keys[b] and idx[a] < idx[b])


cdef void _sift_down(double* keys, Py_ssize_t* idx, Py_ssize_t size, Py_ssize_t i) noexcept nogil:
    """Restore the heap order (smallest (key, index) at the top) below i."""
    cdef Py_ssize_t child, smallest, x
    cdef double k
    while True:
        smallest = i
        child = 2 * i + 1
        if child < size and _less(keys, idx, child, smallest):
            smallest = child
        if child + 1 < size and _less(keys, idx, child + 1, smallest):
            smallest = child + 1
        if smallest == i:
            return
        k = keys[i]
        keys[i] = keys[smallest]
        keys[smallest] = k
        x = idx[i]
        idx[i] = idx[smallest]
        idx[smallest] = x
        i = smallest


def best_values(
    const double[:, ::1] predictions,
    const Py_ssize_t[::1] flat,
    const Py_ssize_t[::1] starts,
    const int8_t[::1] goal_codes,
    const int64_t[::1] goal_prices,
    const int64_t[::1] lows,
):
    """``bidder.bounds.python_best_values``: per group g (rows ``starts[g]:starts[g + 1]`` of
    ``predictions``, positions ``flat``), the largest ``bidder.scoring.value_cpm_micros``
    over its rows less ``lows[g]``, at least 0, as a float."""
    cdef Py_ssize_t m = lows.shape[0], rows = goal_codes.shape[0], total = flat.shape[0]
    cdef Py_ssize_t g, i, pos
    if starts.shape[0] != m + 1 or predictions.shape[0] != total or predictions.shape[1] != 2:
        raise ValueError("predictions, positions, starts and lows do not fit")
    if goal_prices.shape[0] != rows:
        raise ValueError("the goal arrays differ in length")
    for g in range(m):
        if not 0 <= starts[g] < starts[g + 1] <= total:
            raise ValueError("every group needs at least one row")
    for i in range(total):
        if not 0 <= flat[i] < rows:
            raise IndexError("position out of range")
    out_arr = _np.empty(m, dtype=_np.float64)
    cdef double[::1] out = out_arr
    cdef int64_t best, value, b
    for g in range(m):
        best = 0
        for i in range(starts[g], starts[g + 1]):
            pos = flat[i]
            value = goal_value(goal_codes[pos], goal_prices[pos], predictions[i, 0], predictions[i, 1])
            if i == starts[g] or value > best:
                best = value
        b = best - lows[g]
        out[g] = <double>(b if b > 0 else 0)
    return out_arr


# -- the race's loop (``bidder.race.python_race_loop`` is its reference) -------------------------

RACE_WON = 0  # a candidate's exact key was the smallest: it is the winner
RACE_CAPPED = 1  # the limit of candidates priced was reached
RACE_EVERYTHING = 2  # no candidate with a positive weight, or a bound did not hold


cdef struct _Entry:
    double key  # a lower bound of the candidate's key (exact at level 2)
    Py_ssize_t j
    int level  # 1: from its first or refined bound; 2: from its priced weight


cdef inline bint _before(_Entry* a, _Entry* b) noexcept nogil:
    return a.key < b.key or (a.key == b.key and a.j < b.j)


cdef void _push(_Entry* heap, Py_ssize_t* size, double key, Py_ssize_t j, int level) noexcept nogil:
    cdef Py_ssize_t i = size[0], parent
    cdef _Entry item
    item.key, item.j, item.level = key, j, level
    size[0] += 1
    while i > 0:
        parent = (i - 1) >> 1
        if not _before(&item, &heap[parent]):
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = item


cdef _Entry _pop_entry(_Entry* heap, Py_ssize_t* size) noexcept nogil:
    cdef _Entry top = heap[0], last
    cdef Py_ssize_t n = size[0] - 1, i = 0, child
    size[0] = n
    if n == 0:
        return top
    last = heap[n]
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and _before(&heap[child + 1], &heap[child]):
            child += 1
        if not _before(&heap[child], &last):
            break
        heap[i] = heap[child]
        i = child
    heap[i] = last
    return top


def race_loop(
    object seed,
    const double[::1] bounds,
    object price,
    object refine,
    object excluded,
    Py_ssize_t limit,
    Py_ssize_t batch,
):
    """``bidder.race.python_race_loop`` compiled: the same queue of (key bound, j) entries, the
    same order of refinements and pricing, the same verdict. Candidate j's exponential is
    E_j = -ln(u_j) (``bidder._values.race_uniform`` of ``seed``), taken for the candidates the
    race refines or prices; the others are ordered by ``first_keys``, lower bounds without a
    logarithm. ``price(js)`` and ``refine(js)`` are the race's callbacks (``refine`` None: no
    refinement); ``excluded`` None: no candidate is excluded. Returns (``RACE_WON`` and the
    winner, or ``RACE_CAPPED`` / ``RACE_EVERYTHING`` and -1)."""
    cdef Py_ssize_t n = bounds.shape[0]
    cdef uint64_t s = <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)
    cdef _Order keys
    _order_init_first(&keys, s, bounds)
    cdef Py_ssize_t finite = keys.finite, taken = 0, size = 0, priced = 0, t, j
    cdef double next_key = 0.0, b, w
    cdef Py_ssize_t next_j = -1
    cdef bint have_next = _order_pop(&keys, &next_key, &next_j)
    cdef bint refining = refine is not None
    cdef _Entry head, nxt
    # the queue and the refined bounds in one block (as ``_order_alloc``'s)
    cdef _Entry* heap = <_Entry*>PyMem_Malloc((n + 1) * (sizeof(_Entry) + sizeof(double)))
    cdef double* refined
    cdef list js
    if heap == NULL:
        _order_free(&keys)
        raise MemoryError()
    refined = <double*>(heap + (n + 1))
    try:
        while True:
            if have_next:
                nxt.key, nxt.j = next_key, next_j
            if have_next and (size == 0 or _before(&nxt, &heap[0])):
                if refining:
                    js = []
                    # up to ``batch`` of the next in order, less the excluded, while their
                    # first keys come before the queue's head (those after it may never need
                    # refining)
                    for t in range(batch):
                        if not have_next:
                            break
                        nxt.key, nxt.j = next_key, next_j
                        if size > 0 and not _before(&nxt, &heap[0]):
                            break
                        if excluded is None or not excluded(next_j):
                            js.append(next_j)
                        taken += 1
                        have_next = taken < finite and _order_pop(&keys, &next_key, &next_j)
                    if js:
                        got = refine(js)
                        if len(got) != len(js):
                            raise ValueError("refine answered another number of bounds")
                        for t in range(len(js)):
                            j = js[t]
                            b = got[t]
                            refined[j] = b
                            if b > 0.0:
                                _push(heap, &size, race_exponential(s, j) / b, j, 1)
                    continue
                j = next_j
                if excluded is None or not excluded(j):
                    refined[j] = INFINITY
                    _push(heap, &size, next_key, j, 1)
                taken += 1
                have_next = taken < finite and _order_pop(&keys, &next_key, &next_j)
                continue
            if size == 0:
                return RACE_EVERYTHING, -1
            head = _pop_entry(heap, &size)
            if head.level == 2:
                return RACE_WON, head.j
            if limit and priced >= limit:
                return RACE_CAPPED, -1
            j = head.j
            priced += 1
            (weight,) = price([j])
            if weight is None:
                continue
            w = weight
            if not w > 0.0:
                continue
            if w > bounds[j] or w > refined[j]:
                return RACE_EVERYTHING, -1  # a bound did not hold: the reference
            _push(heap, &size, race_exponential(s, j) / w, j, 2)
    finally:
        PyMem_Free(heap)  # and ``refined`` with it
        _order_free(&keys)
