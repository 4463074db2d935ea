# cython: language_level=3, boundscheck=False, wraparound=False
"""The bid path's scoring loop over a snapshot's creative positions, compiled.

The reference is ``bidder.scorer.python_logistic_positions``; tests/bidder/test_bidder_scorer.py
checks that both give the same predictions.
"""
from libc.math cimport exp, isnan


def logistic_positions(
    list positions,
    double[:, ::1] static,
    Py_ssize_t[:, ::1] ids,
    list tables,
    object miss,
    double z0_click,
    double z0_install,
):
    """(sigmoid(click sum), sigmoid(install sum)) per position, sums clamped to +-60: the
    position's static sums + z0, then ``tables[j][ids[position, j]]`` for each slot j in order
    (``miss(j, id)`` when that entry is still NaN). The reference is
    bidder.scorer.python_logistic_positions."""
    cdef Py_ssize_t n = len(positions)
    cdef Py_ssize_t m = len(tables)
    cdef Py_ssize_t i, j, k, pos
    cdef double zr, zi, wr
    cdef double complex w
    cdef double[:, ::1] view
    if m != ids.shape[1]:
        raise ValueError("one table per cross slot")
    if ids.shape[0] != static.shape[0]:
        raise ValueError("static and ids differ in rows")
    if m > 32:
        raise ValueError("at most 32 cross slots")
    cdef double *rows[32]
    cdef Py_ssize_t sizes[32]
    for j in range(m):
        view = tables[j]
        sizes[j] = view.shape[0]
        if view.shape[1] != 2:
            raise ValueError("tables have two columns (click, install)")
        rows[j] = &view[0, 0] if sizes[j] > 0 else NULL
    out = []
    for i in range(n):
        pos = positions[i]
        if not 0 <= pos < static.shape[0]:
            raise IndexError("position out of range")
        zr = static[pos, 0] + z0_click
        zi = static[pos, 1] + z0_install
        for j in range(m):
            k = ids[pos, j]
            if not 0 <= k < sizes[j]:
                raise IndexError("prefix id out of range")
            wr = rows[j][2 * k]
            if isnan(wr):
                w = miss(j, k)
                zr += w.real
                zi += w.imag
            else:
                zr += wr
                zi += rows[j][2 * k + 1]
        zr = min(max(zr, -60.0), 60.0)
        zi = min(max(zi, -60.0), 60.0)
        out.append((1.0 / (1.0 + exp(-zr)), 1.0 / (1.0 + exp(-zi))))
    return out
