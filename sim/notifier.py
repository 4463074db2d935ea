"""What follows an auction, sent over HTTP: win, billing and loss notices with their macros
filled, the markup's impression pixels and clicks (drawn from the TRUE probabilities), and the
measurement partner's install and in-app event postbacks, each after its simulated delay.

Delays are simulated seconds, ``d / time_scale`` real seconds. Whatever is still waiting when the
run ends is counted as ``pending_at_end`` of its kind; whatever nothing answers, as unanswered.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable

from sim import auction
from sim.httpclient import Client, Result
from sim.ledger import Ledger
from sim.market import Opportunity
from sim.notices import FollowupParams, Followups, draw_followups, extract_trackers, origin_of
from sim.notices import postback_url as make_postback_url
from sim.settings import SimSettings
from sim.traffic import SimRequest


class Notifier:
    def __init__(
        self,
        *,
        client: Client,
        ledger: Ledger,
        settings: SimSettings,
        params: FollowupParams,
        rng: random.Random,
        tracker_url: str,
        sim_now: Callable[[], float],
        run_tag: str = "",
    ) -> None:
        self._client = client
        self.ledger = ledger
        self.settings = settings
        self._params = params
        self._rng = rng
        self.tracker_url = tracker_url.rstrip("/")
        self._sim_now = sim_now
        # A run's apps are its own, as its request ids are: a second run on the same data
        # directory installs them afresh instead of repeating the first run's installs.
        self._app_tag = f"#{run_tag}" if run_tag else ""
        self._installed: set[tuple[int, str]] = set()  # (user index, app): an app installs once
        # key -> (handle, kind, loop time due): uvloop's call_later(0) gives a Handle, no when()
        self._timers: dict[int, tuple[asyncio.Handle, str, float]] = {}
        self._timer_ids = itertools.count()

    def later(self, sim_delay: float, kind: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` after ``sim_delay`` simulated seconds (counted as pending if never run)."""
        key = next(self._timer_ids)

        def fire() -> None:
            self._timers.pop(key, None)
            fn()

        loop = asyncio.get_running_loop()
        delay = sim_delay / self.settings.time_scale
        handle = loop.call_later(delay, fire)
        self._timers[key] = (handle, kind, loop.time() + delay)

    def busy_before(self, deadline: float) -> bool:
        """Something is due before ``deadline`` (loop time) or still waiting for an answer."""
        return any(due <= deadline for _, _, due in self._timers.values()) or any(
            p.in_flight for p in self._client.pools
        )

    def cancel_pending(self) -> None:
        for handle, kind, _ in self._timers.values():
            handle.cancel()
            self.ledger.notices[kind].pending_at_end += 1
        self._timers.clear()

    def fire(self, kind: str, url: str, on_result: Callable[[Result], None] | None = None) -> None:
        counts = self.ledger.notices[kind]
        counts.due += 1

        def done(result: Result) -> None:
            if result.sent_at:
                counts.sent += 1
            self.ledger.notice(kind, result.status, result.error)
            if on_result is not None:
                on_result(result)

        self._client.get(url, self.settings.notice_timeout, done)

    def loss(
        self,
        request: SimRequest,
        bid: auction.RtbBid,
        seat: str,
        currency: str,
        reason: int,
        winning_usd_micros: int,
    ) -> None:
        if not bid.lurl:
            return
        price = auction.format_cpm(winning_usd_micros) if winning_usd_micros else ""
        values = auction.macro_values(
            request_id=request.id,
            bid=bid,
            seat=seat,
            price=price,
            currency=currency,
            loss=reason,
            min_to_win=price,
        )
        self.fire("loss", auction.substitute_macros(bid.lurl, values))

    def win(
        self,
        request: SimRequest,
        bid: auction.RtbBid,
        seat: str,
        currency: str,
        outcome: auction.Outcome,
        row: int,
        p_click: float,
        p_install: float,
    ) -> None:
        values = auction.macro_values(
            request_id=request.id,
            bid=bid,
            seat=seat,
            price=auction.format_cpm(outcome.clear_usd_micros),
            currency=currency,
            loss=auction.WON,
        )
        fate = draw_followups(self._rng, p_click, p_install, self._params)
        app = (bid.adomain[0] if bid.adomain else f"campaign-{bid.cid}") + self._app_tag
        burl = auction.substitute_macros(bid.burl, values) if bid.burl else ""
        adm = auction.substitute_macros(bid.adm, values) if bid.adm else ""
        opp = request.opportunity

        def with_markup(markup: str) -> None:
            if fate.render_s is not None:
                self.later(
                    fate.render_s,
                    "billing",
                    lambda: self._render(opp, markup, burl, row, fate, app),
                )

        if bid.nurl:
            nurl = auction.substitute_macros(bid.nurl, values)
            if adm:
                self.fire("win", nurl)
                with_markup(adm)
            else:  # the markup is the win notice's answer

                def markup_from(result: Result) -> None:
                    if result.response is not None and result.response.status == 200:
                        with_markup(result.response.body.decode("utf-8", "replace"))

                self.fire("win", nurl, markup_from)
        else:
            with_markup(adm)

    def _render(
        self, opp: Opportunity, adm: str, burl: str, row: int, fate: Followups, app: str
    ) -> None:
        """The ad is on screen: the exchange bills it, the device fires the pixels."""
        self.ledger.bill(row)
        self.ledger.show(row, opp.user.index, self._sim_now())
        if burl:
            self.fire("billing", burl)
            if fate.duplicate_billing_s is not None:
                self.ledger.notices["billing"].duplicates += 1
                self.later(fate.duplicate_billing_s, "billing", lambda: self.fire("billing", burl))
        trackers = extract_trackers(adm)
        for url in trackers.impressions:
            self.fire("impression", url)
        if fate.click_s is None:
            return
        self.later(fate.click_s, "click", lambda: self._click(opp, trackers.clicks, row, fate, app))

    def _click(
        self, opp: Opportunity, urls: tuple[str, ...], row: int, fate: Followups, app: str
    ) -> None:
        self.ledger.set(row, "clicked", 1)
        self.ledger.clicks += 1
        click_url = urls[0] if urls else ""
        redirect: list[str] = []
        if click_url:
            self.fire(
                "click",
                click_url,
                lambda r: redirect.append(
                    r.response.headers.get("location", "") if r.response else ""
                ),
            )
        for url in urls[1:]:
            self.fire("click", url)
        if fate.install_s is None:
            return
        tracker = self.tracker_url or origin_of(click_url)

        def postback(event: str, revenue: int) -> None:
            if not tracker:
                self.ledger.notices["install" if event == "install" else "event"].unanswered[
                    "no_tracker"
                ] += 1
                return
            url = make_postback_url(
                tracker,
                event=event,
                click_url=click_url,
                redirect=redirect[0] if redirect else "",
                ifa=opp.user.ifa,
                event_ts=self._sim_now(),
                revenue_micros=revenue,
                app=app,
            )
            self.fire("install" if event == "install" else "event", url)

        def install() -> None:
            if (opp.user.index, app) in self._installed:
                return  # installed already (from an earlier click): nothing to install
            self._installed.add((opp.user.index, app))
            self.ledger.set(row, "installed", 1)
            self.ledger.installs += 1
            postback("install", 0)
            for event in fate.events:

                def fire_event(e: str = event.name, rev: int = event.revenue_micros) -> None:
                    self.ledger.events += 1
                    self.ledger.revenue_micros += rev
                    postback(e, rev)

                self.later(event.delay_s, "event", fire_event)

        self.later(fate.install_s, "install", install)
