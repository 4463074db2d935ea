"""The bid path: a chain of small stages over one context object, deadline checked between them.

    decode -> deadline -> traffic filters -> privacy -> candidates (targeting index)
      -> per candidate: deal floor, max price, frequency caps, creative (Thompson sampling)
      -> bound, score, price and pacing gate, only as far as the internal auction needs
       (bidder.race) -> response

``Pipeline.handle`` never raises and never answers after the deadline: past it the answer is a
no-bid with outcome "late" (which the service does not send). The deadline (and the auction's
own tmax) comes from ``bidder.options.TmaxBounds`` and travels on the ``Answer`` for the
endpoint's last check; the answer and its events are built by ``bidder.outcome``. Only L1
data is read on this path: a frequency counter that is not in memory yet (``None``) skips the
capped campaign instead of waiting.

The gate is asked once per priced candidate, before the internal auction, with the price in the
campaign's currency, the bid's P(win) from the market model and ``now`` = wall-clock seconds; it
must not reserve spend, because most
candidates lose the internal auction: spend in flight is what ``Answer.bids`` reports.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from bidder import outcome, response
from bidder.anonymous import AnonymousTxids
from bidder.auction import Offer
from bidder.creative import CreativePerformance, NoPerformance, choose_creative_index
from bidder.decoding import decode_request
from bidder.errors import BadRequest, InvalidRequest
from bidder.filters import TrafficFilter
from bidder.index_update import apply_changes
from bidder.offers import MAX_MICROS, Chosen, OfferRow, Segment, price_offers, select
from bidder.openrtb import BidRequest, Imp, Nbr
from bidder.options import PipelineSettings
from bidder.outcome import Answer, BidSummary
from bidder.pacing_link import count_opportunities
from bidder.pricing import MarketPriceModel, Shader, floor_micros, market_params
from bidder.privacy import ConsentCache, Privacy, decide
from bidder.race import exponentials, race
from bidder.scorer import (
    PositionTables,
    Scorer,
    StaticScorer,
    position_scorer,
    static_rates,
)
from bidder.scoring import (
    HashedLinearModel,
    Model,
    StaticModel,
    cross_prefixes,
    cross_suffixes,
    inventory_key,
    predict_crossed,
    request_features,
    static_features,
    values_cpm_micros,
)
from bidder.targeting import Candidate, RequestView, TargetingIndex, request_view
from fleet.config import Campaign, ConfigSnapshot, Creative, GoalType
from fleet.events import AnyEvent
from fleet.signing import Signer, UserKeys

__all__ = ["Answer", "BidSummary", "FrequencyReader", "Pipeline", "PipelineSettings", "SpendGate"]

log = logging.getLogger("bidder.pipeline")

# Reasons a candidate drops out, in pipeline order: the later wins a tie.
_DROP_ORDER: Final = (
    "currency",
    "floor",
    "privacy",
    "no_user",
    "freq_unknown",
    "freq_cap",
    "low_value",
    "paced",
)
_ZERO_IFA: Final = frozenset({"", "00000000-0000-0000-0000-000000000000"})
_MAX_REMEMBERED: Final = 200_000
_ERROR_LOG_INTERVAL_S: Final = 10.0


class SpendGate(Protocol):
    def allow(
        self, campaign: Campaign, price_cpm_micros: int, now: float, p_win: float = 1.0
    ) -> bool:
        """May the campaign bid ``price_cpm_micros`` (its currency) now? ``p_win``: the
        market model's probability that the bid wins (the bid's expected cost is the price
        times it); 1 when unknown."""
        ...


class FrequencyReader(Protocol):
    def impressions(self, user_key: str, campaign_id: int, period_seconds: int) -> int | None:
        """Impressions of the campaign seen by the user in the period; None when not known
        yet (an L1 miss: the reader fetches it in the background)."""
        ...

    def bid(self, user_key: str, campaign_id: int, periods: Sequence[int]) -> None:
        """A bid on the campaign for the user went out: count it against each cap period."""
        ...


@dataclass(slots=True)
class _Context:
    """Everything one request accumulates on its way through the stages."""

    req: BidRequest
    deadline: float  # a bid may not leave from then on (monotonic clock)
    expires: float  # nothing may leave from then on: the auction's own tmax
    clock: Callable[[], float]
    wallclock: float
    exchange: str
    view: RequestView = field(default_factory=RequestView)
    privacy: Privacy | None = None
    user_key: str | None = None
    candidates: int = 0
    drops: dict[str, int] = field(default_factory=dict)  # candidates dropped, by reason
    opportunities: dict[int, int] = field(default_factory=dict)  # eligible, by campaign id

    def late(self) -> bool:
        return self.clock() >= self.deadline


# goal types as codes, for the value bounds computed over arrays
_GOAL_CODES: Final = {"CPM": 0, "CPC": 1, "CPI": 2, "CPA": 2}
_GOAL_NAMES: Final[tuple[GoalType, ...]] = ("CPM", "CPC", "CPI")  # CPI and CPA: the same value


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A snapshot made ready for the bid path: the index and, by creative position, its
    campaign's goal (code and price in the bidding currency) and the hashed feature tables."""

    index: TargetingIndex
    goal_codes: npt.NDArray[np.int8]
    goal_prices: npt.NDArray[np.int64]
    tables: PositionTables | None  # hashed with the model's seed, for hashed linear models
    # for the pipeline's model, when it is a hashed linear one or a static one (the priors)
    scorer: Scorer | None


class _ImpOffers:
    """The priced candidates of one imp, column by column; an Offer is built for winners only."""

    __slots__ = (
        "campaign_ids",
        "compiled",
        "imp",
        "priced",
        "rows",
        "shared",
        "suffixes",
        "weights",
        "winner",
    )

    def __init__(self, imp: Imp, compiled: _Compiled) -> None:
        self.imp = imp
        self.compiled = compiled
        self.campaign_ids: list[int] = []
        self.weights: list[float] = []
        self.rows: list[OfferRow] = []  # in the order of the two columns above
        self.shared: list[str] = []
        self.suffixes: tuple[str, ...] = ()
        self.winner: int | None = None  # the row that won the internal auction
        self.priced = 0  # candidates priced

    def offer(self, k: int) -> Offer:
        cand, pos, floor, auction_type, value, bid, p_win, p_click, p_install, segment = self.rows[
            k
        ]
        return Offer(
            imp=self.imp,
            entry=cand.entry,
            creative=self.compiled.index.creatives[pos],
            price=bid,
            value=value,
            floor=floor,
            p_win=p_win,
            p_click=p_click,
            p_install=p_install,
            auction_type=auction_type,
            deal=cand.deal,
            features=self.features(k),
            segment=segment,
        )

    def features(self, k: int) -> list[str]:
        """What the k-th offer was scored on: shared, static, then the crosses."""
        cand, pos = self.rows[k][0], self.rows[k][1]
        campaign, creative = cand.entry.campaign, self.compiled.index.creatives[pos]
        static, prefixes = static_features(campaign, creative), cross_prefixes(campaign, creative)
        crossed = [p + x for p, x in zip(prefixes, self.suffixes, strict=True)]
        return [*self.shared, *static, *crossed]


class Pipeline:
    def __init__(
        self,
        settings: PipelineSettings,
        *,
        gate: SpendGate,
        frequency: FrequencyReader,
        model: Model,
        market: MarketPriceModel,
        performance: CreativePerformance,
        rng: random.Random,
    ) -> None:
        settings.validate()
        self.settings = settings
        self._gate = gate
        self._frequency = frequency
        self._model = model
        self._market = market
        self._performance = performance
        self._no_performance = isinstance(performance, NoPerformance)
        self._rng = rng
        self._filter = TrafficFilter(
            settings.crawler_ua_patterns,
            settings.datacenter_cidrs,
            settings.blocked_publishers,
            settings.reject_incomplete_schain,
        )
        self._consent = ConsentCache()
        self._compiled: _Compiled | None = None
        # set_snapshot may run in a worker thread (the index is built off the event loop)
        self._swap = threading.Lock()
        self._shader = Shader()
        self._signer = Signer(settings.signing_key)
        self._user_keys = UserKeys(settings.user_key_secret or settings.signing_key)
        self._bids: dict[str, tuple[str, int, int]] = {}  # txid -> (segment, bid, auction type)
        self._last_error_log = float("-inf")
        self.capped_imps = 0  # imps whose race max_priced_per_imp stopped (a counter)
        self._campaigns: dict[int, Campaign] = {}  # those of the snapshot bid on
        # a copy of the generator draws the run tag: the stream choices draw from is not shifted
        tag_rng = random.Random()
        tag_rng.setstate(rng.getstate())
        self._anonymous = AnonymousTxids(settings.bidder_id, tag_rng)

    # -- configuration (off the hot path) -------------------------------------------------------

    def set_snapshot(self, snapshot: ConfigSnapshot) -> bool:
        """Make ``snapshot`` the one bid on: the index (and feature tables) updated from the
        current one when few campaigns changed (``bidder.index_update``), else built anew;
        then swapped in. True when it was incremental."""
        old = self._compiled
        index = apply_changes(old.index, self._campaigns, snapshot) if old is not None else None
        if index is None:
            index, old = TargetingIndex(snapshot, self.settings.currency), None
        self._set_index(index, old)
        self._campaigns = {c.id: c for c in snapshot.campaigns}
        return old is not None

    def _set_index(self, index: TargetingIndex, old: _Compiled | None) -> None:
        """Swap in ``index`` with its per-position arrays and feature tables: those of the
        positions of ``old`` kept, the positions after them added."""
        start = len(old.index.creatives) if old is not None else 0
        codes, prices = [], []
        statics: list[tuple[str, ...]] = []
        prefixes: list[tuple[str, ...]] = []
        # the new positions, in position order (an entry's number says nothing of it)
        fresh = sorted(
            (e for e in index.entries if e.first_creative >= start), key=lambda e: e.first_creative
        )
        for e in fresh:
            k = len(e.creatives)
            codes += [_GOAL_CODES.get(e.campaign.goal_type, 2)] * k
            prices += [e.goal_price_micros] * k
            for cr in e.creatives:
                statics.append(static_features(e.campaign, cr))
                prefixes.append(cross_prefixes(e.campaign, cr))
        goal_codes = np.asarray(codes, dtype=np.int8)
        goal_prices = np.asarray(prices, dtype=np.int64)
        old_tables = None
        if old is not None:
            goal_codes = np.concatenate([old.goal_codes, goal_codes])
            goal_prices = np.concatenate([old.goal_prices, goal_prices])
            old_tables = old.tables

        def tables_for(model: Model) -> PositionTables | None:
            if not isinstance(model, HashedLinearModel):
                return None
            if old_tables is not None and old_tables.seed == model.seed:
                return old_tables.extended(statics, prefixes)
            if old is None:
                return PositionTables(statics, prefixes, model.seed)
            return _tables(index, model.seed)

        def scorer_for(model: Model, tables: PositionTables | None) -> Scorer | None:
            if not isinstance(model, StaticModel):
                return position_scorer(model, tables)
            kept = old.scorer if old is not None else None
            if isinstance(kept, StaticScorer) and kept.model is model:
                return kept.extended(statics)
            if old is None:
                return StaticScorer(model, static_rates(model, statics))
            return _static_scorer(index, model)

        model = self._model
        tables = tables_for(model)
        scorer = scorer_for(model, tables)
        with self._swap:  # the scorer and the model it scores with change together
            if self._model is not model:  # set_model ran meanwhile
                model = self._model
                tables = tables_for(model)
                scorer = scorer_for(model, tables)
            self._compiled = _Compiled(index, goal_codes, goal_prices, tables, scorer)

    def set_model(self, model: Model) -> None:
        with self._swap:
            compiled = self._compiled
            if compiled is not None:
                tables = compiled.tables
                if isinstance(model, HashedLinearModel) and (
                    tables is None or tables.seed != model.seed
                ):
                    tables = _tables(compiled.index, model.seed)
                scorer: Scorer | None = (
                    _static_scorer(compiled.index, model)
                    if isinstance(model, StaticModel)
                    else position_scorer(model, tables)
                )
                self._compiled = dataclasses.replace(compiled, tables=tables, scorer=scorer)
            self._model = model

    @property
    def ready(self) -> bool:
        return self._compiled is not None

    @property
    def index(self) -> TargetingIndex | None:
        return self._compiled.index if self._compiled is not None else None

    # -- market feedback ------------------------------------------------------------------------

    def observe(self, txid: str, *, won: bool, price_cpm_micros: int = 0) -> bool:
        """Feed a win or loss of one of our recent bids to the market model. ``price`` is the
        clearing price on a win, the winning price on a loss when the exchange tells it (else
        0). False when the bid is not remembered (another process's, or too old)."""
        known = self._bids.pop(txid, None)
        if known is None:
            return False
        segment, bid, auction_type = known
        if won:
            exact = auction_type != 1 and price_cpm_micros > 0
            self._market.observe_win(segment, price_cpm_micros if exact else bid, exact)
        elif price_cpm_micros > bid:
            self._market.observe_win(segment, price_cpm_micros, True)
        else:
            self._market.observe_loss(segment, bid)
        return True

    # -- the bid path ---------------------------------------------------------------------------

    def handle(
        self,
        body: bytes,
        *,
        arrival: float,
        clock: Callable[[], float],
        wallclock: float,
        remote_ip: str = "",
        user_agent_header: str = "",
        exchange: str = "",
    ) -> Answer:
        """Answer one bid request (``body`` already gunzipped). Never raises.

        ``remote_ip`` and ``user_agent_header`` belong to the exchange's server, not the user:
        the filters read ``device.ip`` and ``device.ua``; they are accepted for the service's
        own use (exchange allow lists, logs)."""
        try:
            return self._handle(body, arrival, clock, wallclock, exchange)
        except Exception:  # a defect: answer a no-bid rather than a 5xx, log now and then
            now = clock()
            if now - self._last_error_log >= _ERROR_LOG_INTERVAL_S:
                self._last_error_log = now
                log.exception("internal error on the bid path (logged at most every 10 s)")
            return outcome.no_bid(
                self.settings, request_id=None, nbr=Nbr.TECHNICAL, reason="internal"
            )

    def _handle(
        self,
        body: bytes,
        arrival: float,
        clock: Callable[[], float],
        wallclock: float,
        exchange: str,
    ) -> Answer:
        s = self.settings
        broken_rule: str | None = None
        try:
            req = decode_request(body)
        except InvalidRequest as exc:
            req, broken_rule = exc.request, exc.reason  # type: ignore[assignment]
        except BadRequest as exc:
            event = outcome.auction_event(
                s.bidder_id,
                None,
                None,
                wallclock=wallclock,
                exchange=exchange,
                outcome="invalid",
                nbr=Nbr.INVALID_REQUEST,
                reason="invalid",
                candidates=0,
                latency_us=int((clock() - arrival) * 1e6),
                anonymous_txid=self._anonymous.next(),
            )
            return outcome.invalid(exc.reason, Nbr.INVALID_REQUEST, [event])
        bounds = s.tmax
        ctx = _Context(
            req,
            bounds.deadline(arrival, req.tmax),
            bounds.expires(arrival, req.tmax),
            clock,
            wallclock,
            exchange,
        )
        if broken_rule is not None:
            return self._no_bid(ctx, "invalid_request", arrival, Nbr.INVALID_REQUEST)
        if ctx.late():
            return self._no_bid(ctx, "deadline", arrival)
        compiled = self._compiled
        if compiled is None:
            return self._no_bid(ctx, "not_ready", arrival)
        index = compiled.index
        if req.cur and s.currency not in {c.strip().upper() for c in req.cur}:
            return self._no_bid(ctx, "currency", arrival)
        rejection = self._filter.check(req)
        if rejection is not None:
            return self._no_bid(ctx, rejection.reason, arrival, rejection.nbr)
        ctx.privacy = decide(req, s.vendor_id, self._consent)
        ctx.view = request_view(
            req, personalize=ctx.privacy.personalize, wallclock=wallclock, exchange=exchange
        )
        # the keyed hash the tracker counts impressions under: never the raw id
        user_id = _user_id(req, exchange) if ctx.privacy.user_key else None
        ctx.user_key = None if user_id is None else self._user_keys(user_id)
        request_mask = index.request_mask(ctx.view, wallclock)
        creative_mask = index.all_creatives & ~index.blocked_creatives(req)
        winners: list[Offer] = []
        won: set[int] = set()  # a campaign wins at most one imp of a request
        for imp in req.imp:
            if ctx.late():
                return self._no_bid(ctx, "deadline", arrival)
            floor = self._floor(imp.bidfloor, imp.bidfloorcur, index.fx)
            if floor is None:
                ctx.drops["currency"] = ctx.drops.get("currency", 0) + 1
                continue
            candidates = index.candidates(imp, request_mask, creative_mask, s.seat)
            ctx.candidates += len(candidates)
            count_opportunities(ctx.opportunities, candidates)
            if candidates:
                offers = self._offers(ctx, compiled, imp, floor, candidates, won)
                if offers.winner is not None:
                    offer = offers.offer(offers.winner)
                    won.add(offer.entry.campaign.id)
                    winners.append(offer)
        if ctx.late():
            return self._no_bid(ctx, "deadline", arrival)
        if not winners:
            return self._no_bid(ctx, _drop_reason(ctx), arrival)
        answer = self._bid_answer(ctx, winners, arrival)
        if ctx.late():
            for b in answer.bids:
                self._bids.pop(b.txid, None)
            return self._no_bid(ctx, "deadline", arrival)
        if ctx.user_key is not None:
            self._count_capped_bids(ctx.user_key, winners)
        return answer

    def _count_capped_bids(self, user_key: str, winners: list[Offer]) -> None:
        """The bids going out on capped campaigns count against the user's caps at once (the
        tracker counts them only once their impressions arrive)."""
        for offer in winners:
            campaign = offer.entry.campaign
            if campaign.frequency_caps:
                periods = [cap.period_seconds for cap in campaign.frequency_caps]
                self._frequency.bid(user_key, campaign.id, periods)

    def _offers(
        self,
        ctx: _Context,
        compiled: _Compiled,
        imp: Imp,
        imp_floor: int,
        candidates: list[Candidate],
        won: set[int],
    ) -> _ImpOffers:
        """The imp's priced offers and the winner of its internal auction (``bidder.race``):
        candidates are bounded first, scored and priced only while they can still win, so
        the winner (and the RNG's state) is the one of pricing every candidate."""
        s, drops = self.settings, ctx.drops
        out = _ImpOffers(imp, compiled)
        chosen = Chosen()
        select(
            candidates,
            imp_floor,
            ctx.req.at,
            lambda deal: self._floor(deal.bidfloor, deal.bidfloorcur, compiled.index.fx),
            partial(self._capped, ctx),
            partial(self._choose_creative, compiled.index.creatives),
            drops,
            chosen,
        )
        n = len(chosen.candidates)
        if not n:
            return out
        exps = exponentials(self._rng.getrandbits(64), n)  # the draw's one random number
        view = ctx.view
        shared = request_features(view, imp)
        suffixes = cross_suffixes(view, inventory_key(view))
        out.shared, out.suffixes = shared, suffixes
        positions = np.asarray(chosen.positions, dtype=np.intp)
        # a surviving bid is at least its floor, the minimum bid and 1 micro
        lows = np.maximum(np.asarray(chosen.floors, dtype=np.int64), max(s.min_bid_cpm_micros, 1))
        goal_codes = compiled.goal_codes[positions]
        goal_prices = compiled.goal_prices[positions]
        predictions: dict[int, tuple[float, float]] = {}
        scorer = compiled.scorer

        def predict(js: list[int]) -> None:
            missing = [j for j in js if j not in predictions]
            if not missing:
                return
            if scorer is not None:
                got = scorer.score(z0, positions[missing], list(suffixes)).tolist()
            else:
                got = self._predict(compiled, chosen, missing, shared, suffixes)
            for j, (pc, pi) in zip(missing, got, strict=True):
                predictions[j] = (pc, pi)

        def refine(js: list[int]) -> list[float]:
            """Weight bounds from the exact values: value - the lowest surviving bid."""
            predict(js)
            goals = [(_GOAL_NAMES[goal_codes[j]], int(goal_prices[j])) for j in js]
            values = values_cpm_micros(goals, [predictions[j] for j in js])
            return [float(max(v - int(lows[j]), 0)) for v, j in zip(values, js, strict=True)]

        if scorer is not None:
            z0 = scorer.shared_sum(shared)
            bounds = _weight_bounds(goal_codes, goal_prices, scorer.bound(z0, positions), lows)
            refiner = refine
        else:  # no bounds of the rates: every candidate scored, bounds from exact values
            z0 = (0.0, 0.0)
            bounds = np.asarray(refine(list(range(n))), dtype=np.float64)
            refiner = None
        market = self._market
        row_of: dict[int, int] = {}  # candidate -> its row in ``out``

        def segment_of(auction_type: int) -> Segment:
            name = market_segment(view, imp, auction_type)
            return name, market_params(market, name)

        def price(js: list[int]) -> list[float | None]:
            predict(js)
            some = Chosen()
            for j in js:
                some.candidates.append(chosen.candidates[j])
                some.positions.append(chosen.positions[j])
                some.floors.append(chosen.floors[j])
                some.auction_types.append(chosen.auction_types[j])
            first = len(out.rows)
            slot_of = {id(chosen.candidates[j]): j for j in js}  # rows come in value order
            price_offers(
                some,
                [predictions[j] for j in js],
                segment_of,
                len(js),
                s.margin,
                s.min_bid_cpm_micros,
                market,
                self._shader,
                self._gate.allow,
                ctx.wallclock,
                drops,
                out.campaign_ids,
                out.weights,
                out.rows,
            )
            weights: dict[int, float] = {}
            for r in range(first, len(out.rows)):
                j = slot_of[id(out.rows[r][0])]
                row_of[j] = r
                weights[j] = out.weights[r]
            return [weights.get(j) for j in js]

        result = race(
            exps,
            bounds,
            price,
            refine=refiner,
            excluded=lambda j: chosen.candidates[j].entry.campaign.id in won,
            limit=s.max_priced_per_imp,
            early=s.early_stop,
        )
        out.priced = result.priced
        if result.capped:
            self.capped_imps += 1
        if result.winner is not None:
            out.winner = row_of[result.winner]
        return out

    def _predict(
        self,
        compiled: _Compiled,
        chosen: Chosen,
        js: list[int],
        shared: list[str],
        suffixes: tuple[str, ...],
    ) -> list[tuple[float, float]]:
        """Predictions of a model without a position scorer, from feature strings."""
        creatives = compiled.index.creatives
        statics, prefixes = [], []
        for j in js:
            campaign, creative = chosen.candidates[j].entry.campaign, creatives[chosen.positions[j]]
            statics.append(static_features(campaign, creative))
            prefixes.append(cross_prefixes(campaign, creative))
        return predict_crossed(self._model, shared, statics, prefixes, suffixes)

    def _floor(self, bidfloor: float, currency: str, fx: dict[str, int]) -> int | None:
        """An imp's or a deal's floor in the bidding currency (None: unknown currency), at most
        MAX_MICROS: above any maximum bid, so the same "floor" drops."""
        floor = floor_micros(bidfloor, currency, self.settings.currency, fx)
        return None if floor is None else min(floor, MAX_MICROS)

    def _choose_creative(self, creatives: list[Creative], positions: list[int]) -> int:
        """The position of the creative to show among several (Thompson sampling)."""
        if self._no_performance:  # every posterior is the prior: the same uniform draw
            n = len(positions)
            return positions[min(int(self._rng.random() * n), n - 1)]
        options = [creatives[j] for j in positions]
        return positions[choose_creative_index(options, self._performance, self._rng)]

    def _capped(self, ctx: _Context, campaign: Campaign) -> str:
        """Why a campaign with frequency caps cannot bid ("" when it can)."""
        privacy = ctx.privacy
        if privacy is None or not privacy.user_key:
            return "privacy"
        if ctx.user_key is None:
            return "no_user"
        for cap in campaign.frequency_caps:
            seen = self._frequency.impressions(ctx.user_key, campaign.id, cap.period_seconds)
            if seen is None:
                return "freq_unknown"
            if seen >= cap.max_impressions:
                return "freq_cap"
        return ""

    def _bid_answer(self, ctx: _Context, winners: list[Offer], arrival: float) -> Answer:
        s, req = self.settings, ctx.req
        bids = []
        events: list[AnyEvent] = []
        summaries = []
        model_version = self._model.version
        for offer in winners:
            txid = outcome.txid_for(req.id, offer.imp.id, s.bidder_id)
            bids.append(
                response.build_bid(offer, txid, s, ctx.wallclock, self._signer, ctx.user_key)
            )
            events.append(outcome.bid_event(offer, txid, ctx.wallclock, model_version))
            summaries.append(outcome.summary(offer, txid))
            self._remember(txid, offer.segment, offer.price, offer.auction_type)
        body = response.bid_body(req.id, bids, s)
        events.insert(0, self._auction_event(ctx, "bid", None, "", arrival))
        return Answer(
            status=200,
            body=body,
            outcome="bid",
            nbr=None,
            reason="bid",
            candidates=ctx.candidates,
            bids=summaries,
            events=events,
            request_id=req.id,
            deadline=ctx.deadline,
            expires=ctx.expires,
        )

    def _remember(self, txid: str, segment: str, bid: int, auction_type: int) -> None:
        bids = self._bids
        if len(bids) >= _MAX_REMEMBERED:
            for old in list(bids)[: _MAX_REMEMBERED // 10]:  # the oldest tenth
                del bids[old]
        bids[txid] = (segment, bid, auction_type)

    def _no_bid(self, ctx: _Context, reason: str, arrival: float, nbr: int | None = None) -> Answer:
        code = outcome.nbr_for(reason) if nbr is None else nbr
        kind = "late" if reason == "deadline" else "nobid"
        return outcome.no_bid(
            self.settings,
            request_id=ctx.req.id,
            nbr=code,
            reason=reason,
            outcome=kind,
            candidates=ctx.candidates,
            events=[self._auction_event(ctx, kind, code, reason, arrival)],
            deadline=ctx.deadline,
            expires=ctx.expires,
        )

    def _auction_event(
        self, ctx: _Context, kind: str, nbr: int | None, reason: str, arrival: float
    ) -> AnyEvent:
        return outcome.auction_event(
            self.settings.bidder_id,
            ctx.req,
            ctx.view,
            wallclock=ctx.wallclock,
            exchange=ctx.exchange,
            outcome=kind,
            nbr=nbr,
            reason=reason,
            candidates=ctx.candidates,
            latency_us=int((ctx.clock() - arrival) * 1e6),
            opportunities=ctx.opportunities,
            anonymous_txid=self._anonymous.next() if ctx.view is None else "",
        )


def _by_position(index: TargetingIndex) -> list[tuple[Campaign, Creative] | None]:
    """Every position of the index with its campaign, in position order; None for the dead
    ones, left behind by incremental updates (no entry holds them any more, and no
    candidate reaches them)."""
    out: list[tuple[Campaign, Creative] | None] = [None] * len(index.creatives)
    for e in index.entries:
        for k, cr in enumerate(e.creatives):
            out[e.first_creative + k] = (e.campaign, cr)
    return out


_DEAD: Final = ("",) * 6  # the features of a dead position (hashed, never scored)


def _tables(index: TargetingIndex, seed: int) -> PositionTables:
    """The index's positions hashed for scoring (the strings are not kept)."""
    pairs = _by_position(index)
    statics = [_DEAD if p is None else static_features(*p) for p in pairs]
    prefixes = [_DEAD if p is None else cross_prefixes(*p) for p in pairs]
    return PositionTables(statics, prefixes, seed)


def _static_scorer(index: TargetingIndex, model: StaticModel) -> StaticScorer:
    """The predictions of a static model (the priors) for every position of the index."""
    statics = [_DEAD if p is None else static_features(*p) for p in _by_position(index)]
    return StaticScorer(model, static_rates(model, statics))


def _weight_bounds(
    goal_codes: npt.NDArray[np.int8],
    goal_prices: npt.NDArray[np.int64],
    rates: npt.NDArray[np.float64],
    lows: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]:
    """Upper bounds of the auction weights, from upper bounds of (p_click, p_install): the
    value ``bidder.scoring.value_cpm_micros`` computes from those (the same float operations,
    monotone in the rates) + 1, less the lowest surviving bid; 0 when not positive."""
    p_click = rates[:, 0]
    p = np.where(goal_codes == 1, p_click, p_click * rates[:, 1])
    scaled = goal_prices.astype(np.float64) * np.minimum(p, 1.0) * 1000.0
    values = np.where(goal_codes == 0, goal_prices, scaled.astype(np.int64) + 1)
    bounds: npt.NDArray[np.float64] = np.maximum(values - lows, 0).astype(np.float64)
    return bounds


def market_segment(view: RequestView, imp: Imp, auction_type: int) -> str:
    """The market-price segment of an imp: auction type, exchange, country and format."""
    if imp.banner is not None:
        b = imp.banner
        if b.w and b.h:
            fmt = f"{b.w}x{b.h}"
        elif b.format and b.format[0].w and b.format[0].h:
            fmt = f"{b.format[0].w}x{b.format[0].h}"
        else:
            fmt = "banner"
    elif imp.video is not None:
        fmt = "video"
    elif imp.native is not None:
        fmt = "native"
    else:
        fmt = "other"
    return f"{auction_type}|{view.exchange}|{view.country}|{fmt}"


def _user_id(req: BidRequest, exchange: str) -> str | None:
    """The id the user key is the keyed hash of: the device advertising id first (the same in
    every app and the mobile web, and the id a measurement partner's postback carries, so the
    tracker matches installs to clicks under the same key), then our own synced id (one
    browser's cookie), then the exchange's id."""
    user, device = req.user, req.device
    if device is not None and device.ifa and device.lmt != 1:
        ifa = device.ifa.strip().lower()
        if ifa not in _ZERO_IFA:
            return ifa
    if user is not None and user.buyeruid:
        return f"b:{user.buyeruid}"
    if user is not None and user.id:
        return f"u:{exchange}:{user.id}"
    return None


def _drop_reason(ctx: _Context) -> str:
    if not ctx.drops:
        return "no_candidates"
    top = max(ctx.drops.values())
    tied = [r for r, n in ctx.drops.items() if n == top]
    return max(tied, key=lambda r: _DROP_ORDER.index(r) if r in _DROP_ORDER else -1)
