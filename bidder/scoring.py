"""Scoring: features, click/install models and the value of an impression.

Features are stable strings ``name=value`` (crosses ``a^b=x^y``), hashed with MurmurHash3 via
``fleet.features`` so that the learner, which trains on the very strings a BidEvent carries,
and the bidder agree on every index. Request-level features are computed and hashed once per
imp; each candidate adds its campaign/creative features and crosses. No user-level feature
(segments, and their crosses with the campaign) appears unless privacy allows personalisation.

Crosses are ``prefix + suffix``: the prefixes belong to the candidate (``cross_prefixes``), the
suffixes to the request (``cross_suffixes``). The last prefix, ``campaign^seg``, takes every
one of the request's segments (``cross_pairs``): a request without usable segments has one
suffix fewer than there are prefixes, one with n segments n - 1 more.

The model file (header, versions, checksum, the reference ``predict``) is the kernel's:
``fleet.model``. ``HashedLinearModel`` is the bidder's view of one, with memo tables for the bid
path; ``bidder.scorer`` scores whole snapshots from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from bidder.openrtb import Imp
from bidder.targeting import RequestView
from fleet import model as model_file
from fleet.config import Campaign, Creative, GoalType
from fleet.features import DEFAULT_BITS, hash_one
from fleet.model import ModelFile, ModelFormatError

MAX_SEGMENT_FEATURES: Final = 16
MAX_CATEGORY_FEATURES: Final = 6
_HOURS: Final = tuple(str(h) for h in range(24))


@dataclass(slots=True)
class FeatureRow:
    """One candidate's features: ``static`` depends only on the campaign and creative (the
    same tuple across requests, so models may cache by it), ``dynamic`` on the request too."""

    static: tuple[str, ...]
    dynamic: list[str]

    def all(self) -> list[str]:
        return [*self.static, *self.dynamic]


@runtime_checkable
class Model(Protocol):
    @property
    def version(self) -> int: ...

    def predict(self, features: list[str]) -> tuple[float, float]:
        """(p_click, p_install given a click) for one impression's features."""
        ...


@runtime_checkable
class BatchModel(Model, Protocol):
    def predict_batch(
        self, shared: list[str], rows: Sequence[FeatureRow]
    ) -> list[tuple[float, float]]:
        """``predict(shared + row.all())`` for each row, ``shared`` looked at once."""
        ...


@runtime_checkable
class CrossedModel(Model, Protocol):
    def predict_crossed(
        self,
        shared: list[str],
        statics: Sequence[tuple[str, ...]],
        prefixes: Sequence[tuple[str, ...]],
        suffixes: tuple[str, ...],
    ) -> list[tuple[float, float]]:
        """``predict_batch`` of rows ``FeatureRow(statics[i], cross_pairs(prefixes[i],
        suffixes))``, without building the rows."""
        ...


@runtime_checkable
class StaticModel(Model, Protocol):
    def predict_static(self, static: tuple[str, ...]) -> tuple[float, float]:
        """``predict`` of any impression of a candidate with these static features: the
        model looks at the campaign and creative only, never at the request."""
        ...


def predict_crossed(
    model: Model,
    shared: list[str],
    statics: Sequence[tuple[str, ...]],
    prefixes: Sequence[tuple[str, ...]],
    suffixes: tuple[str, ...],
) -> list[tuple[float, float]]:
    """Predictions for candidates given by their static features and cross prefixes, the
    crosses completed with the request's ``suffixes`` (``cross_suffixes``)."""
    crossed = getattr(model, "predict_crossed", None)
    if crossed is not None:
        result: list[tuple[float, float]] = crossed(shared, statics, prefixes, suffixes)
        return result
    rows = [
        FeatureRow(st, cross_pairs(pre, suffixes))
        for st, pre in zip(statics, prefixes, strict=True)
    ]
    return predict_all(model, shared, rows)


def predict_all(
    model: Model, shared: list[str], rows: Sequence[FeatureRow]
) -> list[tuple[float, float]]:
    batch = getattr(model, "predict_batch", None)  # (isinstance on a Protocol is slow)
    if batch is not None:
        result: list[tuple[float, float]] = batch(shared, rows)
        return result
    return [model.predict(shared + row.all()) for row in rows]


# -- features -----------------------------------------------------------------------------------


def inventory_key(view: RequestView) -> str:
    if view.inventory == "app":
        return view.app_bundle or "app"
    if view.inventory == "site":
        return view.site_domain or "site"
    return view.inventory or "none"


def request_features(view: RequestView, imp: Imp | None = None) -> list[str]:
    """Features of the request and imp, shared by every candidate."""
    f = [
        f"country={view.country}",
        f"os={view.os}",
        f"dt={view.device_type}",
        f"conn={view.connection_type}",
        f"inv={view.inventory}",
        f"{view.inventory or 'inv'}={inventory_key(view)}",
        f"pub={view.publisher_id}",
        f"hour={view.local_hour}",
        f"dow={view.weekday}",
        f"exchange={view.exchange}",
    ]
    f += [f"cat={c}" for c in sorted(view.categories)[:MAX_CATEGORY_FEATURES]]
    if imp is not None:
        pos = imp.banner.pos if imp.banner is not None else None
        if pos is None and imp.video is not None:
            pos = imp.video.pos
        f.append(f"pos={pos or 0}")
        f.append(f"instl={imp.instl}")
    if view.personalize and view.segments:
        f += [f"seg={s}" for s in sorted(view.segments)[:MAX_SEGMENT_FEATURES]]
    return f


def static_features(campaign: Campaign, creative: Creative) -> tuple[str, ...]:
    c = campaign.id
    return (
        f"campaign={c}",
        f"adv={campaign.advertiser_id}",
        f"creative={creative.id}",
        f"goal={campaign.goal_type}",
        f"fmt={creative.format}",
        f"size={creative.w}x{creative.h}",
    )


def cross_prefixes(campaign: Campaign, creative: Creative) -> tuple[str, ...]:
    """Prefixes of the crosses; ``crosses`` appends inventory, country, os, hour, inventory,
    inventory to the first six, in that order, and each of the request's segments to the last
    (``campaign^seg``: the user's interests against the campaign's)."""
    c, cr, size = campaign.id, creative.id, f"{creative.w}x{creative.h}"
    return (
        f"campaign^inv={c}^",
        f"campaign^country={c}^",
        f"campaign^os={c}^",
        f"campaign^hour={c}^",
        f"creative^inv={cr}^",
        f"size^inv={size}^",
        f"campaign^seg={c}^",
    )


def segment_suffixes(view: RequestView) -> tuple[str, ...]:
    """The segments crossed with the campaign: none unless privacy allows personalisation (the
    same ones, sorted and as many, as the ``seg=`` features)."""
    if not view.personalize or not view.segments:
        return ()
    return tuple(sorted(view.segments)[:MAX_SEGMENT_FEATURES])


def cross_suffixes(view: RequestView, inv: str) -> tuple[str, ...]:
    """The request's halves of the crosses: one per prefix of ``cross_prefixes`` but the last,
    then one per segment for the last (``cross_pairs``)."""
    hour = _HOURS[view.local_hour] if 0 <= view.local_hour < 24 else str(view.local_hour)
    return (inv, view.country, view.os, hour, inv, inv, *segment_suffixes(view))


def cross_pairs(prefixes: tuple[str, ...], suffixes: tuple[str, ...]) -> list[str]:
    """The crosses: suffix j with prefix j, the last prefix with every suffix from its own
    position on (none, one or many)."""
    last = len(prefixes) - 1
    if not last <= len(suffixes) <= last + MAX_SEGMENT_FEATURES:
        raise ValueError(f"{len(suffixes)} cross suffixes for {len(prefixes)} prefixes")
    return [prefixes[j if j < last else last] + x for j, x in enumerate(suffixes)]


def crosses(prefixes: tuple[str, ...], view: RequestView, inv: str) -> list[str]:
    return cross_pairs(prefixes, cross_suffixes(view, inv))


def candidate_features(view: RequestView, campaign: Campaign, creative: Creative) -> list[str]:
    """Features of one campaign and creative on this request, with crosses."""
    inv = inventory_key(view)
    return [
        *static_features(campaign, creative),
        *crosses(cross_prefixes(campaign, creative), view, inv),
    ]


def features_for(
    view: RequestView, campaign: Campaign, creative: Creative, imp: Imp | None = None
) -> list[str]:
    return request_features(view, imp) + candidate_features(view, campaign, creative)


def value_cpm_micros(
    goal_type: GoalType, goal_price_micros: int, p_click: float, p_install: float
) -> int:
    """What 1000 impressions are worth: goal price x p(goal | impression) x 1000.

    CPM: the goal price itself; CPC: p_click; CPI and CPA (an in-app goal after the install):
    p_click x p_install."""
    if goal_type == "CPM":
        return goal_price_micros
    p = p_click if goal_type == "CPC" else p_click * p_install
    if not (p > 0.0) or not math.isfinite(p):
        return 0
    return int(goal_price_micros * min(p, 1.0) * 1000)


def values_cpm_micros(
    goals: Sequence[tuple[GoalType, int]], predictions: Sequence[tuple[float, float]]
) -> list[int]:
    """``value_cpm_micros`` of each (goal type, goal price) with its (p_click, p_install):
    the same values, one call for a whole batch of candidates."""
    out: list[int] = []
    append, isfinite = out.append, math.isfinite
    for (goal_type, goal_price), (p_click, p_install) in zip(goals, predictions, strict=True):
        if goal_type == "CPM":
            append(goal_price)
            continue
        p = p_click if goal_type == "CPC" else p_click * p_install
        if not (p > 0.0) or not isfinite(p):
            append(0)
        else:
            append(int(goal_price * (p if p < 1.0 else 1.0) * 1000))
    return out


# -- models -------------------------------------------------------------------------------------


def _campaign_of(features: list[str]) -> int | None:
    for f in features:
        if f.startswith("campaign="):
            try:
                return int(f[9:])
            except ValueError:
                return None
    return None


class PriorModel:
    """Priors until a learnt model exists: a click rate and an install-given-click rate, per
    goal type, overridable per campaign."""

    def __init__(
        self,
        click: float = model_file.PRIOR_CLICK_RATE,
        install: float = model_file.PRIOR_INSTALL_RATE,
        per_goal: Mapping[str, tuple[float, float]] | None = None,
        per_campaign: Mapping[int, tuple[float, float]] | None = None,
        version: int = 0,
    ) -> None:
        self._default = (click, install)
        self._per_goal = dict(per_goal or {})
        self._per_campaign = dict(per_campaign or {})
        self._version = version

    @property
    def version(self) -> int:
        return self._version

    def predict(self, features: list[str]) -> tuple[float, float]:
        campaign = _campaign_of(features)
        if campaign is not None and campaign in self._per_campaign:
            return self._per_campaign[campaign]
        if self._per_goal:
            for f in features:
                if f.startswith("goal="):
                    return self._per_goal.get(f[5:], self._default)
        return self._default

    def predict_static(self, static: tuple[str, ...]) -> tuple[float, float]:
        """The prediction of every impression of this candidate: a prior reads only the
        ``campaign=`` and ``goal=`` features, both static."""
        return self.predict(list(static))

    def predict_batch(
        self, shared: list[str], rows: Sequence[FeatureRow]
    ) -> list[tuple[float, float]]:
        if not self._per_campaign and not self._per_goal:
            return [self._default] * len(rows)
        return [self.predict(list(row.static)) for row in rows]


class HashedLinearModel:
    """Two logistic heads over hashed features, weights as float32 arrays of 2**bits."""

    def __init__(
        self,
        click_weights: npt.NDArray[np.float32],
        install_weights: npt.NDArray[np.float32],
        click_bias: float = 0.0,
        install_bias: float = 0.0,
        *,
        bits: int = DEFAULT_BITS,
        seed: int = 0,
        version: int = 0,
        memo_size: int = 200_000,
    ) -> None:
        size = 1 << bits
        if click_weights.shape != (size,) or install_weights.shape != (size,):
            raise ModelFormatError(f"weights must have 2**{bits} = {size} entries per head")
        self.bits = bits
        self.seed = seed
        self._version = version
        self.click_bias = float(np.float32(click_bias))
        self.install_bias = float(np.float32(install_bias))
        self.weights = np.ascontiguousarray(
            np.stack([click_weights, install_weights]).astype(np.float32, copy=False)
        )
        self._mask = size - 1
        self.memo_size = memo_size
        # memo tables: click weight + 1j * install weight
        self._features: dict[str, complex] = {}
        self._statics: dict[tuple[str, ...], complex] = {}
        self._crossed: dict[str, dict[str, complex]] = {}  # suffix -> prefix -> weights

    @classmethod
    def zeros(
        cls, bits: int = DEFAULT_BITS, *, seed: int = 0, version: int = 0
    ) -> HashedLinearModel:
        w = np.zeros(1 << bits, dtype=np.float32)
        return cls(w, w.copy(), bits=bits, seed=seed, version=version)

    @property
    def version(self) -> int:
        return self._version

    def predict(self, features: list[str]) -> tuple[float, float]:
        """``fleet.model.predict``, the reference."""
        return model_file.predict_weights(
            self.weights, self.click_bias, self.install_bias, self.bits, self.seed, features
        )

    def predict_batch(
        self, shared: list[str], rows: Sequence[FeatureRow]
    ) -> list[tuple[float, float]]:
        """Sums of per-feature weights kept in memo tables (cleared when full): the static part
        of a row by its tuple, the rest by feature string; both heads at once as the real and
        imaginary parts of one complex number. Equal to ``predict`` up to float rounding
        (sums in float64 rather than float32)."""
        weights_of = self._weights_of
        z0 = self.shared_sum(shared)
        features = self._features
        exp = math.exp
        out = []
        for row in rows:
            z = self.static_sum(row.static) + z0
            for f in row.dynamic:
                w = features.get(f)
                z += w if w is not None else weights_of(f)
            zc = min(max(z.real, -60.0), 60.0)
            zi = min(max(z.imag, -60.0), 60.0)
            out.append((1.0 / (1.0 + exp(-zc)), 1.0 / (1.0 + exp(-zi))))
        return out

    def predict_crossed(
        self,
        shared: list[str],
        statics: Sequence[tuple[str, ...]],
        prefixes: Sequence[tuple[str, ...]],
        suffixes: tuple[str, ...],
    ) -> list[tuple[float, float]]:
        """``predict_batch`` with each row's crosses completed here, one at a time, instead
        of built as lists first: the same sums in the same order."""
        weights_of = self._weights_of
        z0 = self.shared_sum(shared)
        # one table per suffix, keyed by prefix: no string is built or hashed per candidate
        crossed = self._crossed
        if len(crossed) >= self.memo_size:
            crossed.clear()
        tables = []
        for x in suffixes:
            t = crossed.get(x)
            if t is None:
                t = crossed[x] = {}
            elif len(t) >= self.memo_size:
                t.clear()
            tables.append(t)
        exp = math.exp
        out = []
        slots = tuple(zip(tables, suffixes, strict=True))
        for static, pre in zip(statics, prefixes, strict=True):
            z = self.static_sum(static) + z0
            last = len(pre) - 1
            if not last <= len(suffixes) <= last + MAX_SEGMENT_FEATURES:
                raise ValueError(f"{len(suffixes)} cross suffixes for {len(pre)} prefixes")
            for j, (t, x) in enumerate(slots):
                p = pre[j if j < last else last]
                w = t.get(p)
                if w is None:
                    w = t[p] = weights_of(p + x)
                z += w
            zc = min(max(z.real, -60.0), 60.0)
            zi = min(max(z.imag, -60.0), 60.0)
            out.append((1.0 / (1.0 + exp(-zc)), 1.0 / (1.0 + exp(-zi))))
        return out

    def weight(self, feature: str) -> complex:
        """One feature's weights as click + 1j * install (memoised)."""
        return self._weights_of(feature)

    def shared_sum(self, shared: list[str]) -> complex:
        """The biases plus the weights of a request's shared features, added in order."""
        weights_of = self._weights_of
        z = complex(self.click_bias, self.install_bias)
        for f in shared:
            z += weights_of(f)
        return z

    def static_sum(self, static: tuple[str, ...]) -> complex:
        """The weights of a candidate's static features, added in order (memoised)."""
        z = self._statics.get(static)
        return z if z is not None else self._static_sum(static)

    def _weights_of(self, feature: str) -> complex:
        w = self._features.get(feature)
        if w is None:
            i = hash_one(feature, self.seed) & self._mask
            w = complex(float(self.weights[0, i]), float(self.weights[1, i]))
            if len(self._features) >= self.memo_size:
                self._features.clear()
            self._features[feature] = w
        return w

    def _static_sum(self, static: tuple[str, ...]) -> complex:
        z = 0j
        for f in static:
            z += self._weights_of(f)
        if len(self._statics) >= self.memo_size:
            self._statics.clear()
        self._statics[static] = z
        return z

    def file(self) -> ModelFile:
        return ModelFile(
            bits=self.bits,
            seed=self.seed,
            version=self._version,
            click_bias=self.click_bias,
            install_bias=self.install_bias,
            weights=self.weights,
        )

    def to_bytes(self) -> bytes:
        """The model file (``fleet.model.encode``)."""
        return model_file.encode(self.file())

    @classmethod
    def from_file(cls, f: ModelFile) -> HashedLinearModel:
        return cls(
            f.weights[0],
            f.weights[1],
            f.click_bias,
            f.install_bias,
            bits=f.bits,
            seed=f.seed,
            version=f.version,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> HashedLinearModel:
        """Raises ModelFormatError on anything but a complete, intact model."""
        return cls.from_file(model_file.decode(data))
