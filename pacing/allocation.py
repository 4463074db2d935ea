"""The lease rule of :func:`pacing.gate.leases.allocate`, for every campaign at once.

Rows are campaigns, columns holders. Money is int64 micros; the proportional split is done in
float64 in the same order of operations as the reference, so both give the same integers (a
test checks it on random inputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Allocations:
    grants: I64  # (C, H): the new cumulative grant (meaningful for alive holders only)
    exposures: I64  # (C, H)
    pending: I64  # (C,)
    outstanding: I64
    headroom: I64
    granted: I64


def allocate_all(
    budget: I64,
    committed: I64,
    target: I64,
    grant: I64,
    used: I64,
    pending: I64,
    weight: F64,
    lease_live: B,
    alive: B,
    chunk: I64,
    worst: I64,
    exposure_fraction: float,
) -> Allocations:
    """See :func:`pacing.gate.leases.allocate`; ``alive`` is per holder (H,), the rest per
    campaign (C,) or per campaign and holder (C, H)."""
    chunk = np.maximum(chunk, 1)
    pend = pending.sum(axis=1)
    counted = lease_live | ~alive[None, :]  # a silent holder's unused allowance counts
    outstanding = np.where(counted, np.maximum(grant - used, 0), 0).sum(axis=1)
    headroom = budget - committed - pend - outstanding
    want = np.minimum(target - committed - pend - outstanding, headroom)
    want = np.where((want <= 0) | (want < np.minimum(chunk, headroom)), 0, want)
    n_c, n_h = grant.shape
    if not alive.any() or n_c == 0:
        zeros = np.zeros((n_c, n_h), dtype=np.int64)
        return Allocations(zeros, zeros, pend, outstanding, headroom, np.zeros(n_c, np.int64))
    w = np.where(alive[None, :], np.maximum(weight, 0.0), 0.0)
    total = w.sum(axis=1)
    w = np.where((total <= 0)[:, None] & alive[None, :], 1.0, w)
    total = w.sum(axis=1)
    shares = (
        np.floor(want[:, None] * w / total[:, None] / chunk[:, None]).astype(np.int64)
        * chunk[:, None]
    )
    left = want - shares.sum(axis=1)
    held = np.where(lease_live, np.maximum(grant - used, 0), 0)
    priority = np.where(alive[None, :], w / (held + shares + chunk[:, None]), -1.0)
    top = priority.argmax(axis=1)
    shares[np.arange(n_c), top] += left
    exposure_total = (budget * exposure_fraction).astype(np.int64)
    exposures = np.maximum(
        (exposure_total[:, None] * w / total[:, None]).astype(np.int64), worst[:, None]
    )
    base = np.where(lease_live, np.maximum(grant, used), used)
    grants = base + shares
    return Allocations(grants, exposures, pend, outstanding, headroom, want)
