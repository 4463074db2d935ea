"""The bid path: a chain of small stages over one context object, deadline checked between them.

    decode -> deadline -> traffic filters -> privacy -> candidates (targeting index, as arrays)
      -> over all candidates' columns: deal floors, maximum bid against floor, value bounds
      -> in the internal auction's order (bidder.race), only as far as it needs: frequency
         caps, creative (Thompson sampling, a draw keyed per candidate), score, price and
         pacing gate -> response

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

Two stages live in modules of their own: ``bidder.compiled`` makes a snapshot ready for the bid
path (off the event loop), ``bidder.imp_offers`` selects, bounds and prices one imp's candidates.
"""

from __future__ import annotations

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
from bidder.candidates import CandidateSet, candidate_set
from bidder.compiled import Compiled, compile_index, fresh_positions, with_model
from bidder.creative import CreativePerformance, NoPerformance, choose_creative_index
from bidder.decoding import decode_request
from bidder.errors import BadRequest, InvalidRequest
from bidder.filters import TrafficFilter
from bidder.imp_offers import Bidding, ImpOffers, imp_offers, market_segment
from bidder.index_update import apply_changes, changed_campaigns
from bidder.offers import MAX_MICROS
from bidder.openrtb import BidRequest, Imp, Nbr
from bidder.options import PipelineSettings
from bidder.outcome import Answer, BidSummary
from bidder.pricing import MarketPriceModel, Shader, floor_micros
from bidder.privacy import ConsentCache, Privacy, decide
from bidder.race import unit
from bidder.scoring import Model
from bidder.shapes import RequestCreatives
from bidder.targeting import RequestView, TargetingIndex, request_view
from fleet.config import Campaign, ConfigSnapshot, Creative
from fleet.events import AnyEvent
from fleet.signing import Signer, UserKeys

__all__ = [
    "Answer",
    "BidSummary",
    "FrequencyReader",
    "Pipeline",
    "PipelineSettings",
    "SpendGate",
    "market_segment",
]

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
    # each imp's candidate campaign ids (eligible opportunities: ``Answer.opportunities``)
    opportunities: list[npt.NDArray[np.int64]] = field(default_factory=list)

    def late(self) -> bool:
        return self.clock() >= self.deadline


# goal types as codes, for the value bounds computed over arrays
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
        self._compiled: Compiled | None = None
        # set_snapshot may run in a worker thread (the index is built off the event loop)
        self._swap = threading.Lock()
        self._shader = Shader()
        self._signer = Signer(settings.signing_key)
        self._user_keys = UserKeys(settings.user_key_secret or settings.signing_key)
        self._bids: dict[str, tuple[str, int, int]] = {}  # txid -> (segment, bid, auction type)
        self._last_error_log = float("-inf")
        self.capped_imps = 0  # imps whose race max_priced_per_imp stopped (a counter)
        # caps and creatives only for the candidates the race reaches (False: for all first,
        # the reference the lazy path must equal)
        self.lazy = True
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
        index = None
        if old is not None:
            changed, removed = changed_campaigns(self._campaigns, snapshot)
            index = apply_changes(old.index, self._campaigns, snapshot, (changed, removed))
        if index is None:
            index, old = TargetingIndex(snapshot, self.settings.currency), None
        self._set_index(index, old)
        if old is None:
            self._campaigns = {c.id: c for c in snapshot.campaigns}
            return False
        # the objects the index holds: the old ones of the campaigns that did not change (so
        # that the previous snapshot's are not all freed here, and this stays short)
        campaigns = dict(self._campaigns)
        for i in removed:
            campaigns.pop(i, None)
        for c in changed:
            campaigns[c.id] = c
        self._campaigns = campaigns
        return True

    def _set_index(self, index: TargetingIndex, old: Compiled | None) -> None:
        """Swap in ``index`` with its per-position arrays and feature tables: those of the
        positions of ``old`` kept, the positions after them added."""
        fresh = fresh_positions(index, old)
        model = self._model
        compiled = compile_index(index, old, fresh, model)
        with self._swap:  # the scorer and the model it scores with change together
            if self._model is not model:  # set_model ran meanwhile
                compiled = compile_index(index, old, fresh, self._model)
            self._compiled = compiled

    def set_model(self, model: Model) -> None:
        with self._swap:
            compiled = self._compiled
            if compiled is not None:
                self._compiled = with_model(compiled, model)
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
        creative_mask = RequestCreatives(index, req)  # a mask only for an imp shape not seen
        winners: list[Offer] = []
        won: set[int] = set()  # a campaign wins at most one imp of a request
        for imp in req.imp:
            if ctx.late():
                return self._no_bid(ctx, "deadline", arrival)
            floor = self._floor(imp.bidfloor, imp.bidfloorcur, index.fx)
            if floor is None:
                ctx.drops["currency"] = ctx.drops.get("currency", 0) + 1
                continue
            candidates = candidate_set(index, imp, request_mask, creative_mask, s.seat)
            ctx.candidates += len(candidates)
            ctx.opportunities.append(candidates.campaign_ids)
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
        compiled: Compiled,
        imp: Imp,
        imp_floor: int,
        candidates: CandidateSet,
        won: set[int],
    ) -> ImpOffers:
        """The imp's offers and the winner of its internal auction (``bidder.imp_offers``)."""
        index = compiled.index
        bidding = Bidding(
            self.settings,
            self._model,
            self._market,
            self._shader,
            self._rng,
            self._gate.allow,
            lambda deal: self._floor(deal.bidfloor, deal.bidfloorcur, index.fx),
            partial(self._capped, ctx),
            partial(self._choose_creative, index.creatives),
            self.lazy,
        )
        out, capped = imp_offers(
            bidding,
            compiled,
            imp,
            imp_floor,
            candidates,
            won,
            ctx.view,
            ctx.req.at,
            ctx.wallclock,
            ctx.drops,
        )
        if capped:
            self.capped_imps += 1
        return out

    def _floor(self, bidfloor: float, currency: str, fx: dict[str, int]) -> int | None:
        """An imp's or a deal's floor in the bidding currency (None: unknown currency), at most
        MAX_MICROS: above any maximum bid, so the same "floor" drops."""
        floor = floor_micros(bidfloor, currency, self.settings.currency, fx)
        return None if floor is None else min(floor, MAX_MICROS)

    def _choose_creative(
        self, creatives: list[Creative], positions: Sequence[int], key: int
    ) -> int:
        """The position of the creative to show among several (Thompson sampling), from the
        candidate's own 64-bit draw ``key`` (``bidder.race.draw_key``): the same whether or
        not the other candidates' creatives are chosen."""
        if self._no_performance:  # every posterior is the prior: the same uniform draw
            n = len(positions)
            return positions[min(int(unit(key) * n), n - 1)]
        options = [creatives[j] for j in positions]
        return positions[choose_creative_index(options, self._performance, random.Random(key))]

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
            opportunities=ctx.opportunities,
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
            opportunities=ctx.opportunities,
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
            anonymous_txid=self._anonymous.next() if ctx.view is None else "",
        )


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
