# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""FTRL-Proximal per coordinate, compiled: the same arithmetic as learner/ftrl.py (the
reference, whose docstring states the algorithm), row after row without the GIL.

Rows come in CSR form: ``hashes[offsets[r]:offsets[r + 1]]`` are row r's 32-bit feature
hashes (masked here to the estimator's bits), ``values`` the same slice of feature values or
None for all ones. State is one C-contiguous float64 array (2**bits + 1, 2): z and n of a slot
side by side, the bias last. tests/learner/test_learner_ftrl.py holds both to 1e-9.
"""
from libc.math cimport sqrt, exp, fabs, copysign
from libc.stdint cimport uint32_t, uint8_t, int64_t
from libc.stdlib cimport malloc, free
from cpython.unicode cimport PyUnicode_AsUTF8AndSize

from fleet._features cimport murmur3_32

import numpy as np

from learner.errors import BadParameters
from learner.ftrl import LOGISTIC, SQUARED, FtrlState, check_state, weights_of

cdef enum:
    LOSS_LOGISTIC = 0
    LOSS_SQUARED = 1

assert LOSS_LOGISTIC == LOGISTIC and LOSS_SQUARED == SQUARED

cdef double RENORMALISE_BELOW = 2.0 ** -64
cdef double Z_CLAMP = 35.0
cdef double[::1] _ONES = np.ones(1, dtype=np.float64)


cdef class Ftrl:
    cdef readonly object params
    cdef readonly object state
    cdef double[:, ::1] _s
    cdef double alpha, beta, l1, l2, gamma
    cdef uint32_t mask
    cdef Py_ssize_t bias
    cdef int loss
    cdef public double scale
    cdef public long long examples

    def __init__(self, params):
        self.params = params
        if params.loss == "logistic":
            self.loss = LOSS_LOGISTIC
        elif params.loss == "squared":
            self.loss = LOSS_SQUARED
        else:
            raise BadParameters(f"the compiled estimator has no loss {params.loss!r}")
        self.state = np.zeros((params.slots, 2), dtype=np.float64)
        self._s = self.state
        self.alpha = params.alpha
        self.beta = params.beta
        self.l1 = params.l1
        self.l2 = params.l2
        self.gamma = params.gamma
        self.mask = <uint32_t>((1 << params.bits) - 1)
        self.bias = 1 << params.bits
        self.scale = 1.0
        self.examples = 0

    @property
    def nbytes(self):
        return int(self.state.nbytes)

    cdef inline double _weight(self, double z, double n) noexcept nogil:
        if fabs(z) <= self.l1:
            return 0.0
        return -(z - copysign(self.l1, z)) / ((self.beta + sqrt(n)) / self.alpha + self.l2)

    cdef inline double _link(self, double s) noexcept nogil:
        if self.loss == LOSS_LOGISTIC:
            if s > Z_CLAMP:
                s = Z_CLAMP
            elif s < -Z_CLAMP:
                s = -Z_CLAMP
            return 1.0 / (1.0 + exp(-s))
        return s

    cdef void _decay(self) noexcept nogil:
        cdef Py_ssize_t k
        cdef double s
        self.scale *= self.gamma
        if self.scale < RENORMALISE_BELOW:
            s = self.scale
            for k in range(self._s.shape[0]):
                self._s[k, 0] *= s
                self._s[k, 1] *= s
            self.scale = 1.0

    cdef double _row(
        self,
        const uint32_t* h,
        const double* x,
        Py_ssize_t m,
        double label,
        double importance,
        double* ws,
        bint learn,
    ) noexcept nogil:
        cdef Py_ssize_t j, k
        cdef double s = 0.0, w, xj, p, g, gi, n, sigma, scale
        cdef double* st = &self._s[0, 0]
        if learn and self.gamma != 1.0:
            self._decay()
        scale = self.scale
        for j in range(m):
            k = <Py_ssize_t>(h[j] & self.mask)
            w = self._weight(st[2 * k] * scale, st[2 * k + 1] * scale)
            ws[j] = w
            xj = x[j] if x != NULL else 1.0
            s += w * xj
        k = self.bias
        w = self._weight(st[2 * k] * scale, st[2 * k + 1] * scale)
        ws[m] = w
        s += w * 1.0
        p = self._link(s)
        if not learn:
            return p
        g = importance * (p - label)  # both losses: d loss / d score = p - y
        for j in range(m + 1):
            if j < m:
                k = <Py_ssize_t>(h[j] & self.mask)
                xj = x[j] if x != NULL else 1.0
            else:
                k = self.bias
                xj = 1.0
            gi = g * xj
            n = st[2 * k + 1] * scale
            sigma = (sqrt(n + gi * gi) - sqrt(n)) / self.alpha
            st[2 * k] += (gi - sigma * ws[j]) / scale
            st[2 * k + 1] += gi * gi / scale
        self.examples += 1
        return p

    cdef object _run(self, hashes, offsets, labels, weights, values, bint learn):
        cdef const uint32_t[::1] hv = np.ascontiguousarray(hashes, dtype=np.uint32)
        cdef const int64_t[::1] ov = np.ascontiguousarray(offsets, dtype=np.int64)
        cdef Py_ssize_t rows = ov.shape[0] - 1
        cdef Py_ssize_t r, a, b, longest = 0
        cdef const double[::1] lv
        cdef const double[::1] wv
        cdef const double[::1] xv = _ONES
        cdef bint has_values = values is not None
        if rows < 0:
            raise ValueError("offsets needs at least one entry")
        if learn:
            lv = np.ascontiguousarray(labels, dtype=np.float64)
            wv = np.ascontiguousarray(weights, dtype=np.float64)
            if lv.shape[0] != rows or wv.shape[0] != rows:
                raise ValueError("one label and one weight per row")
        if has_values:
            xv = np.ascontiguousarray(values, dtype=np.float64)
            if xv.shape[0] != hv.shape[0]:
                raise ValueError("one value per hash")
        if ov[0] < 0 or ov[rows] > hv.shape[0]:
            raise ValueError("offsets out of range")
        for r in range(rows):
            if ov[r + 1] < ov[r]:
                raise ValueError("offsets must not decrease")
            if ov[r + 1] - ov[r] > longest:
                longest = ov[r + 1] - ov[r]
        out = np.empty(rows, dtype=np.float64)
        cdef double[::1] o = out
        cdef double* ws = <double*>malloc((longest + 1) * sizeof(double))
        if ws == NULL:
            raise MemoryError()
        cdef const uint32_t* hp = &hv[0] if hv.shape[0] > 0 else NULL
        cdef const double* xp = &xv[0] if has_values and xv.shape[0] > 0 else NULL
        try:
            with nogil:
                for r in range(rows):
                    a = ov[r]
                    b = ov[r + 1]
                    if learn:
                        o[r] = self._row(
                            hp + a, (xp + a) if xp != NULL else NULL, b - a, lv[r], wv[r], ws, True
                        )
                    else:
                        o[r] = self._row(
                            hp + a, (xp + a) if xp != NULL else NULL, b - a, 0.0, 0.0, ws, False
                        )
        finally:
            free(ws)
        return out

    def learn(self, hashes, offsets, labels, weights, values=None):
        """Learn from each row in order; the progressive predictions (each made before its
        row was learnt)."""
        return self._run(hashes, offsets, labels, weights, values, True)

    def predict(self, hashes, offsets, values=None):
        return self._run(hashes, offsets, None, None, values, False)

    def learn_one(self, indices, values=None, double label=0.0, double weight=1.0):
        h = np.asarray(indices, dtype=np.uint32)
        xs = None if values is None else np.asarray(values, dtype=np.float64)
        offsets = np.array([0, h.shape[0]], dtype=np.int64)
        return float(self.learn(h, offsets, np.array([label]), np.array([weight]), xs)[0])

    def predict_one(self, indices, values=None):
        h = np.asarray(indices, dtype=np.uint32)
        xs = None if values is None else np.asarray(values, dtype=np.float64)
        return float(self.predict(h, np.array([0, h.shape[0]], dtype=np.int64), xs)[0])

    def weights(self):
        w = weights_of(self.state[:, 0] * self.scale, self.state[:, 1] * self.scale, self.params)
        last = w.shape[0] - 1
        return float(w[last]), w[:last]

    def get_state(self):
        return FtrlState(self.params, self.state.copy(), self.scale, self.examples)

    def set_state(self, state):
        check_state(state, self.params)
        self.state[:] = state.state
        self.scale = state.scale
        self.examples = state.examples


def hash_rows(rows, uint32_t seed=0):
    """(hashes, offsets): the full 32-bit MurmurHash3 of every feature string of every row,
    as a CSR batch (row r is ``hashes[offsets[r]:offsets[r + 1]]``); the same values as
    ``fleet.features.hash_features(row, 32, seed)`` row by row, without building bytes."""
    cdef Py_ssize_t n = len(rows)
    cdef Py_ssize_t i, j, m, k = 0, total = 0
    cdef Py_ssize_t size
    cdef const char* text
    cdef list row
    offsets = np.empty(n + 1, dtype=np.int64)
    cdef int64_t[::1] o = offsets
    cdef list lists = [r if type(r) is list else list(r) for r in rows]
    o[0] = 0
    for i in range(n):
        total += len(<list>lists[i])
        o[i + 1] = total
    hashes = np.empty(total, dtype=np.uint32)
    cdef uint32_t[::1] h = hashes
    for i in range(n):
        row = <list>lists[i]
        m = len(row)
        for j in range(m):
            item = row[j]
            if not isinstance(item, str):
                raise TypeError(f"feature {item!r} is not a string")
            text = PyUnicode_AsUTF8AndSize(item, &size)
            h[k] = murmur3_32(<const uint8_t*>text, size, seed)
            k += 1
    return hashes, offsets
