# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The bid path's scoring loop, compiled: hashed features -> two logistic heads, per position.

The reference is bidder/scorer.py (``python_hash_rows``, ``python_static_sums``,
``python_score``, ``python_bound``); tests/bidder/test_bidder_scorer.py checks that both give the
same numbers, and that they equal ``HashedLinearModel.predict_crossed`` exactly.

A cross feature is ``prefix + suffix``: the prefix belongs to the creative position (known when
the snapshot is compiled), the suffix to the request. Suffix j goes with prefix min(j, c - 1):
the last prefix (``campaign^seg``) takes every one of the request's segments, none to 16. MurmurHash3 (x86, 32 bit) consumes its input
in 4-byte blocks, so each prefix is hashed once, up to its last whole block, into a *midstate*:
(h1 after those blocks, the 0-3 bytes left over, the prefix's length). At request time a cross
costs the few blocks of its suffix and the finalisation, in C, without the GIL.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int8_t, int64_t, uint8_t, uint32_t, uint64_t
import numpy as np
cimport numpy as cnp

from bidder._values cimport goal_value
from bidder._values cimport logistic as _sigmoid

cnp.import_array()

cdef extern from *:
    """
    #define RTB_PREFETCH(p) __builtin_prefetch((const void*)(p))
    """
    void _prefetch "RTB_PREFETCH"(const void* p) noexcept nogil

cdef uint32_t C1 = <uint32_t>0xcc9e2d51
cdef uint32_t C2 = <uint32_t>0x1b873593


cdef inline uint32_t _rotl32(uint32_t x, int r) noexcept nogil:
    return (x << r) | (x >> (32 - r))


cdef inline uint32_t _block(uint32_t h1, uint32_t k1) noexcept nogil:
    k1 = k1 * C1
    k1 = _rotl32(k1, 15)
    k1 = k1 * C2
    h1 ^= k1
    h1 = _rotl32(h1, 13)
    return h1 * 5 + <uint32_t>0xe6546b64


cdef inline uint32_t _finish(uint32_t h1, uint32_t k1, int rem, uint64_t length) noexcept nogil:
    if rem:
        k1 = k1 * C1
        k1 = _rotl32(k1, 15)
        k1 = k1 * C2
        h1 ^= k1
    h1 ^= <uint32_t>length
    h1 ^= h1 >> 16
    h1 = h1 * <uint32_t>0x85ebca6b
    h1 ^= h1 >> 13
    h1 = h1 * <uint32_t>0xc2b2ae35
    h1 ^= h1 >> 16
    return h1


cdef inline uint32_t _resume(
    uint32_t h1, uint32_t tail, uint32_t prefix_len, const uint8_t* suffix, Py_ssize_t n
) noexcept nogil:
    """MurmurHash3 of prefix + suffix from the prefix's midstate (h1 after its whole blocks,
    its last ``prefix_len % 4`` bytes packed little-endian in ``tail``)."""
    cdef int have = prefix_len & 3
    cdef uint32_t k1 = tail
    cdef Py_ssize_t i
    for i in range(n):
        k1 |= (<uint32_t>suffix[i]) << (8 * have)
        have += 1
        if have == 4:
            h1 = _block(h1, k1)
            k1 = 0
            have = 0
    return _finish(h1, k1, have, prefix_len + n)


cdef inline void _midstate(
    const uint8_t* data, Py_ssize_t n, uint32_t seed, uint32_t* out
) noexcept nogil:
    cdef uint32_t h1 = seed
    cdef Py_ssize_t blocks = n // 4
    cdef Py_ssize_t i
    cdef uint32_t tail = 0
    for i in range(blocks):
        h1 = _block(
            h1,
            (<uint32_t>data[4 * i]) | (<uint32_t>data[4 * i + 1] << 8)
            | (<uint32_t>data[4 * i + 2] << 16) | (<uint32_t>data[4 * i + 3] << 24),
        )
    for i in range(n - blocks * 4):
        tail |= (<uint32_t>data[blocks * 4 + i]) << (8 * i)
    out[0] = h1
    out[1] = tail
    out[2] = <uint32_t>n


def hash_rows(list statics, list prefixes, uint32_t seed):
    """(static hashes ``uint32[n, s]``, cross midstates ``uint32[n, c, 3]``) of n positions'
    static features and cross prefixes; every row has the same s and c."""
    cdef Py_ssize_t n = len(statics)
    if len(prefixes) != n:
        raise ValueError("statics and prefixes differ in length")
    cdef Py_ssize_t s = len(statics[0]) if n else 0
    cdef Py_ssize_t c = len(prefixes[0]) if n else 0
    cdef cnp.ndarray[cnp.uint32_t, ndim=2] hashes = np.empty((n, s), dtype=np.uint32)
    cdef cnp.ndarray[cnp.uint32_t, ndim=3] states = np.empty((n, c, 3), dtype=np.uint32)
    cdef Py_ssize_t i, j
    cdef tuple row
    cdef bytes b
    cdef uint32_t st[3]
    for i in range(n):
        row = <tuple?>statics[i]
        if len(row) != s:
            raise ValueError("every position needs the same number of static features")
        for j in range(s):
            b = (<str?>row[j]).encode("utf-8")
            _midstate(<const uint8_t*><char*>b, len(b), seed, st)
            hashes[i, j] = _finish(st[0], st[1], st[2] & 3, st[2])
        row = <tuple?>prefixes[i]
        if len(row) != c:
            raise ValueError("every position needs the same number of cross prefixes")
        for j in range(c):
            b = (<str?>row[j]).encode("utf-8")
            _midstate(<const uint8_t*><char*>b, len(b), seed, st)
            states[i, j, 0] = st[0]
            states[i, j, 1] = st[1]
            states[i, j, 2] = st[2]
    return hashes, states


def hash_strings(list features, uint32_t seed):
    """MurmurHash3 of each string, as ``uint32[n]``."""
    cdef Py_ssize_t n = len(features)
    cdef cnp.ndarray[cnp.uint32_t, ndim=1] out = np.empty(n, dtype=np.uint32)
    cdef Py_ssize_t i
    cdef bytes b
    cdef uint32_t st[3]
    for i in range(n):
        b = (<str?>features[i]).encode("utf-8")
        _midstate(<const uint8_t*><char*>b, len(b), seed, st)
        out[i] = _finish(st[0], st[1], st[2] & 3, st[2])
    return out


def static_sums(const uint32_t[:, ::1] hashes, const float[:, ::1] weights, uint32_t mask):
    """``float64[n, 2]``: per position, 0 + the weights of its static features in order, per
    head (``HashedLinearModel.static_sum``)."""
    cdef Py_ssize_t n = hashes.shape[0], s = hashes.shape[1], i, j
    if weights.shape[0] != 2 or weights.shape[1] <= mask:
        raise ValueError("weights must be float32[2, mask + 1]")
    out_arr = np.zeros((n, 2), dtype=np.float64)
    cdef double[:, ::1] out = out_arr
    cdef uint32_t k
    cdef double zr, zi
    with nogil:
        for i in range(n):
            zr = 0.0
            zi = 0.0
            for j in range(s):
                k = hashes[i, j] & mask
                zr = zr + <double>weights[0, k]
                zi = zi + <double>weights[1, k]
            out[i, 0] = zr
            out[i, 1] = zi
    return out_arr




def score(
    const Py_ssize_t[::1] positions,
    const double[:, ::1] static,
    const uint32_t[:, :, ::1] states,
    list suffixes,
    const float[:, ::1] weights,
    uint32_t mask,
    double z0_click,
    double z0_install,
    double[:, ::1] out,
):
    """Into ``out[i]``: (sigmoid(click sum), sigmoid(install sum)) of ``positions[i]``, each
    sum ``static[pos] + z0``, then the weight of each cross ``prefix[min(j, c - 1)] +
    suffixes[j]`` in order, clamped to +-60: ``HashedLinearModel.predict_crossed`` exactly."""
    cdef Py_ssize_t n = positions.shape[0], c = states.shape[1], rows = static.shape[0]
    cdef Py_ssize_t m = len(suffixes)
    cdef Py_ssize_t i, j, pos, slot
    if c < 1 or not c - 1 <= m <= c - 1 + 16:
        raise ValueError("one suffix per cross slot, the last slot's repeated 0 to 16 times")
    if m > 32:
        raise ValueError("at most 32 crosses")
    if out.shape[0] < n or out.shape[1] != 2 or states.shape[0] != rows:
        raise ValueError("out, static and states do not fit the positions")
    if weights.shape[0] != 2 or weights.shape[1] <= mask:
        raise ValueError("weights must be float32[2, mask + 1]")
    for i in range(n):
        if not 0 <= positions[i] < rows:
            raise IndexError("position out of range")
    cdef list encoded = [(<str?>x).encode("utf-8") for x in suffixes]  # kept alive below
    cdef const uint8_t* sx[32]
    cdef Py_ssize_t sn[32]
    cdef bytes b
    for j in range(m):
        b = encoded[j]
        sx[j] = <const uint8_t*><char*>b
        sn[j] = len(b)
    cdef double zr, zi
    cdef uint32_t k
    with nogil:
        for i in range(n):
            pos = positions[i]
            zr = static[pos, 0] + z0_click
            zi = static[pos, 1] + z0_install
            for j in range(m):
                slot = j if j < c - 1 else c - 1
                k = _resume(
                    states[pos, slot, 0], states[pos, slot, 1], states[pos, slot, 2], sx[j], sn[j]
                ) & mask
                zr = zr + <double>weights[0, k]
                zi = zi + <double>weights[1, k]
            out[i, 0] = _sigmoid(zr)
            out[i, 1] = _sigmoid(zi)


def bound(
    const Py_ssize_t[::1] positions,
    const double[:, ::1] static,
    double z0_click,
    double z0_install,
    double cross_click,
    double cross_install,
    double[:, ::1] out,
):
    """Into ``out[i]``: upper bounds of the two predictions of ``positions[i]`` without its
    crosses: ``static[pos] + z0 + cross`` where ``cross`` bounds the cross weights' sum (the
    number of slots x the largest weight of the head, at least 0); see
    ``bidder.scorer.python_bound``."""
    cdef Py_ssize_t n = positions.shape[0], rows = static.shape[0], i, pos
    if out.shape[0] < n or out.shape[1] != 2:
        raise ValueError("out does not fit the positions")
    for i in range(n):
        if not 0 <= positions[i] < rows:
            raise IndexError("position out of range")
    with nogil:
        for i in range(n):
            pos = positions[i]
            out[i, 0] = _sigmoid(static[pos, 0] + z0_click + cross_click)
            out[i, 1] = _sigmoid(static[pos, 1] + z0_install + cross_install)


cdef class RunScorer:
    """For candidate j, whose creatives are the positions
    ``run_positions[run_starts[r]:run_starts[r + 1]]`` of run ``r = cand_runs[j]``: the largest
    value (``bidder._values.goal_value``) of their predictions (``score``'s numbers, the same
    operations) less its lowest bid ``lows[j]``, at least 0, as a float. What ``score`` of the
    gathered positions and then ``bidder._bounds.best_values`` give, in one pass, without
    gathering them. Made once per imp (the arrays checked and held, the request's suffixes
    ``encoded`` as UTF-8 once), called with the race's lists of candidates; ``pairs``: the
    model's weights by hashed feature, both heads side by side (one cache line per cross).
    It keeps the GIL, like the loops of ``bidder._bounds``: a few microseconds a call, and a
    worker thread taking the GIL in between would make the request wait its switch interval."""

    cdef const Py_ssize_t[::1] cand_runs
    cdef const int64_t[::1] lows
    cdef const Py_ssize_t[::1] run_starts
    cdef const Py_ssize_t[::1] run_positions
    cdef const double[:, ::1] static
    cdef const uint32_t[:, :, ::1] states
    cdef const float[:, ::1] pairs
    cdef const int8_t[::1] goal_codes
    cdef const int64_t[::1] goal_prices
    cdef list encoded  # owns the bytes ``sx`` points into
    cdef const uint8_t* sx[32]
    cdef Py_ssize_t sn[32]
    cdef Py_ssize_t n_suffixes, c
    cdef uint32_t mask
    cdef double z0_click, z0_install

    def __init__(
        self,
        const Py_ssize_t[::1] cand_runs,
        const int64_t[::1] lows,
        const Py_ssize_t[::1] run_starts,
        const Py_ssize_t[::1] run_positions,
        const double[:, ::1] static,
        const uint32_t[:, :, ::1] states,
        list encoded,
        const float[:, ::1] pairs,
        uint32_t mask,
        double z0_click,
        double z0_install,
        const int8_t[::1] goal_codes,
        const int64_t[::1] goal_prices,
    ):
        cdef Py_ssize_t n_pos = static.shape[0], n_runs = run_starts.shape[0] - 1, j
        cdef Py_ssize_t c = states.shape[1], n_suffixes = len(encoded)
        cdef bytes b
        if lows.shape[0] != cand_runs.shape[0]:
            raise ValueError("one lowest bid per candidate")
        if c < 1 or not c - 1 <= n_suffixes <= c - 1 + 16:
            raise ValueError("one suffix per cross slot, the last slot's repeated 0 to 16 times")
        if n_suffixes > 32:
            raise ValueError("at most 32 crosses")
        if (
            states.shape[0] != n_pos or goal_codes.shape[0] != n_pos
            or goal_prices.shape[0] != n_pos
        ):
            raise ValueError("static, states and the goal arrays differ in length")
        if pairs.shape[1] != 2 or pairs.shape[0] <= mask:
            raise ValueError("pairs must be float32[mask + 1, 2]")
        if n_runs < 0:
            raise ValueError("no run starts")
        self.cand_runs, self.lows = cand_runs, lows
        self.run_starts, self.run_positions = run_starts, run_positions
        self.static, self.states, self.pairs = static, states, pairs
        self.goal_codes, self.goal_prices = goal_codes, goal_prices
        self.encoded = list(encoded)
        for j in range(n_suffixes):
            b = <bytes?>self.encoded[j]
            self.sx[j] = <const uint8_t*><char*>b
            self.sn[j] = len(b)
        self.n_suffixes, self.c, self.mask = n_suffixes, c, mask
        self.z0_click, self.z0_install = z0_click, z0_install

    def __call__(self, list js):
        cdef Py_ssize_t m = len(js), n_cands = self.cand_runs.shape[0], c = self.c
        cdef Py_ssize_t n_runs = self.run_starts.shape[0] - 1, n_total = self.run_positions.shape[0]
        cdef Py_ssize_t n_pos = self.static.shape[0], ns = self.n_suffixes
        cdef Py_ssize_t g, i, j, r, pos, slot, q, t, total = 0
        cdef double zr, zi
        cdef uint32_t k, h1, tail, plen
        cdef int64_t best, value, d
        # per cross, the last midstate hashed and its bucket: a campaign's creatives share the
        # prefixes of its campaign-level crosses (campaign^inv, ^country, ...), and an equal
        # midstate hashes an equal suffix to the same bucket, so each is hashed once a run
        cdef uint32_t seen_h1[32]
        cdef uint32_t seen_tail[32]
        cdef uint32_t seen_len[32]
        cdef uint32_t seen_k[32]
        # every position's buckets of the call, found before any weight is summed
        cdef uint32_t on_stack[2048]
        cdef uint32_t* buckets = on_stack
        out = [0.0] * m
        # checked as used: a portfolio's shape has up to 100,000 positions, an imp reads few;
        # and each position's rows asked of memory before any is read, so that the misses of
        # a batch (positions spread over tens of MiB at 100,000 creatives) overlap
        for g in range(m):
            q = <Py_ssize_t?>js[g]
            if not 0 <= q < n_cands:
                raise IndexError("candidate out of range")
            r = self.cand_runs[q]
            if (
                not 0 <= r < n_runs
                or not 0 <= self.run_starts[r] < self.run_starts[r + 1] <= n_total
            ):
                raise IndexError("a run out of range or empty")
            total += self.run_starts[r + 1] - self.run_starts[r]
            for i in range(self.run_starts[r], self.run_starts[r + 1]):
                pos = self.run_positions[i]
                if not 0 <= pos < n_pos:
                    raise IndexError("position out of range")
                _prefetch(&self.states[pos, 0, 0])
                _prefetch(&self.states[pos, c - 1, 0])
                _prefetch(&self.static[pos, 0])
                _prefetch(&self.goal_codes[pos])
                _prefetch(&self.goal_prices[pos])
        if total * ns > 2048:
            buckets = <uint32_t*>PyMem_Malloc(total * ns * sizeof(uint32_t))
            if buckets == NULL:
                raise MemoryError()
        try:
            # every cross's bucket of every position (each weight asked of memory as its
            # bucket is found), then the sums: the misses of the whole call overlap, not only
            # those of one position, and the sums come in the same order as ``score``'s
            t = 0
            for g in range(m):
                r = self.cand_runs[<Py_ssize_t>js[g]]
                for i in range(self.run_starts[r], self.run_starts[r + 1]):
                    pos = self.run_positions[i]
                    for j in range(ns):
                        slot = j if j < c - 1 else c - 1
                        h1 = self.states[pos, slot, 0]
                        tail = self.states[pos, slot, 1]
                        plen = self.states[pos, slot, 2]
                        if (
                            i == self.run_starts[r] or h1 != seen_h1[j] or tail != seen_tail[j]
                            or plen != seen_len[j]
                        ):
                            seen_h1[j], seen_tail[j], seen_len[j] = h1, tail, plen
                            seen_k[j] = _resume(h1, tail, plen, self.sx[j], self.sn[j]) & self.mask
                            _prefetch(&self.pairs[seen_k[j], 0])
                        buckets[t + j] = seen_k[j]
                    t += ns
            t = 0
            for g in range(m):
                q = js[g]
                r = self.cand_runs[q]
                best = 0
                for i in range(self.run_starts[r], self.run_starts[r + 1]):
                    pos = self.run_positions[i]
                    zr = self.static[pos, 0] + self.z0_click
                    zi = self.static[pos, 1] + self.z0_install
                    for j in range(ns):
                        k = buckets[t + j]
                        zr = zr + <double>self.pairs[k, 0]
                        zi = zi + <double>self.pairs[k, 1]
                    t += ns
                    value = goal_value(
                        self.goal_codes[pos], self.goal_prices[pos], _sigmoid(zr), _sigmoid(zi)
                    )
                    if i == self.run_starts[r] or value > best:
                        best = value
                d = best - self.lows[q]
                out[g] = <double>(d if d > 0 else 0)
        finally:
            if buckets != on_stack:
                PyMem_Free(buckets)
        return out
