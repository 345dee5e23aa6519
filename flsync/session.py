"""What a sync must hold and may have to renew, counted in generations rather than known by
its cookie: the signed-in session (:class:`Session`) and the pass through the site's bot
challenge (:class:`Clearance`), both :class:`Renewable`.

Generation N is the session given by the N-th sign-in. Each request is stamped, as it leaves,
with the generation it was sent under. An answer that says "signed out" to a request of the
current generation starts one sign-in, which every request of that generation waits for; to a
request of an older generation it only means that request is sent again, under the newer
session, without signing in. The cookie's value is never consulted: a site may keep it across
sign-in, change it at sign-in, or change it on every answer.

Every loop here is bounded: a sign-in whose session answers "signed out" before serving a
single request means signing in does not help (``SessionUnusable``); renewals are spaced by at
least ``renewal_wait`` seconds and there are at most ``max_renewals`` of them in a sync
(``TooManySignIns``). :class:`flsync.middlewares.SessionMiddleware` adapts this to Scrapy.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

# A request's meta: the (sign-in, bot pass) generations it was sent under.
GENERATION_META = "flsync_session"


class SessionError(Exception):
    """Signing in does not give a usable session; the sync must stop. One line for the user.

    ``reason`` names the case in stats and close reasons (``flsync/signin/<reason>``).
    """

    reason = "failed"


class SignInRefused(SessionError):
    reason = "refused"


class SignInRejected(SessionError):
    reason = "rejected"


class SessionUnusable(SessionError):
    reason = "unusable"


class TooManySignIns(SessionError):
    reason = "too_many"


class ChallengeRepeated(SessionError):
    reason = "challenge_repeated"


class TooManyChallenges(SessionError):
    reason = "challenges"


class ChallengeFailed(SessionError):
    reason = "challenge_failed"


class Renewable:
    """Generations of something held for the sync, and the one renewal under way.

    ``renew`` performs one renewal (raising ``SessionError`` when refused); ``sleep`` waits
    (an interruptible one, so that a stopping sync does not wait out the spacing); ``holder``
    names who holds it, in the messages. Whatever ends a renewal with an exception ends it
    for good: that exception is raised to every request waiting for it, and to every later
    one. Subclasses say what it is (``renew_first``, the messages).
    """

    # Whether the first request waits for a first sign-in (a session), or goes out as it is
    # until it is answered "no" (a pass through the bot wall: only once it asks for one).
    renew_first = True

    def __init__(
        self,
        renew: Callable[[], Awaitable[None]],
        *,
        holder: str,
        max_renewals: int,
        renewal_wait: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self._renew_once = renew
        self.holder = holder
        self.max_renewals = max_renewals
        self.renewal_wait = renewal_wait
        self._sleep = sleep
        self._clock = clock
        self.generation = 0  # renewals done; 0: none yet
        self.served = 0  # answers given under the current generation that were not "signed out"
        self._renewing: asyncio.Future[None] | None = None
        self._last_renewal: float | None = None
        self._failure: Exception | None = None

    async def ready(self) -> int:
        """Wait until there is a session (signing in first if there never was one, or
        waiting for the sign-in under way); the generation a request leaving now is sent
        under. Raises what ended the session, if something did."""
        first = self.renew_first and self.generation == 0
        if self._renewing is None and first and self._failure is None:
            self._start_renewal()
        if self._renewing is not None:
            # shield(): one waiter's cancellation must not cancel the sign-in for the others.
            await asyncio.shield(self._renewing)
        if self._failure is not None:
            raise self._failure
        return self.generation

    def is_current(self, generation: int) -> bool:
        """Whether an answer to a request sent under ``generation`` speaks for the session in
        use: sent under the newest sign-in, and no sign-in under way."""
        return generation == self.generation and self._renewing is None

    def answered(self, generation: int) -> None:
        """A request sent under ``generation`` got an answer that was not "signed out"."""
        if generation == self.generation:
            self.served += 1

    async def expired(self, generation: int) -> None:
        """A request sent under ``generation`` was answered "signed out". Returns once it can
        be sent again (under a newer generation); raises if the session is over."""
        if self._failure is not None:
            raise self._failure
        if generation == self.generation and self._renewing is None:
            if self.generation and not self.served:
                error = self._unusable()
                self._fail(error)
                raise error
            self._start_renewal()
        await self.ready()

    def _start_renewal(self) -> None:
        self._renewing = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        try:
            if self.generation >= self.max_renewals:
                raise self._too_many()
            if self._last_renewal is not None:
                await self._sleep(self._last_renewal + self.renewal_wait - self._clock())
            await self._renew_once()
        except Exception as exc:
            # Kept, and raised to every request waiting and to every later one: once a
            # sign-in has failed, the session is over.
            self._fail(exc)
        else:
            self.generation += 1
            self.served = 0
        finally:
            self._last_renewal = self._clock()
            self._renewing = None

    def _fail(self, error: Exception) -> None:
        self._failure = self._failure or error

    def _unusable(self) -> SessionError:
        raise NotImplementedError

    def _too_many(self) -> SessionError:
        raise NotImplementedError


class Session(Renewable):
    """Generations of the signed-in session (``holder``: the account), the first signed in
    before the first request leaves."""

    def _unusable(self) -> SessionError:
        return SessionUnusable(
            f"Signed in as {self.holder}, but the site answered the next request as signed"
            " out: signing in again would not help (check that the account can use the admin"
            " pages in a browser)"
        )

    def _too_many(self) -> SessionError:
        return TooManySignIns(
            f"Signed in as {self.holder} {self.generation} times in this sync"
            " (FLSYNC_SIGN_IN_MAX): the site keeps ending the session; stopping"
        )


class Clearance(Renewable):
    """Generations of the pass through the site's bot challenge, won in a real browser
    (``holder``: the site's host).

    The same bounds as for sign-ins, with the same settings: a pass is won only once a
    request is challenged; every request that met that challenge waits for the one browser
    visit; a pass that is challenged again before serving a single request ends the sync.
    """

    renew_first = False

    def _unusable(self) -> SessionError:
        return ChallengeRepeated(
            f"The browser passed the bot challenge of {self.holder}, but the next request was"
            " challenged again: its pass does not hold (is the browser's User-Agent or address"
            " different from flsync's?)"
        )

    def _too_many(self) -> SessionError:
        return TooManyChallenges(
            f"Passed the bot challenge of {self.holder} {self.generation} times in this sync"
            " (FLSYNC_SIGN_IN_MAX): the pass keeps lapsing; stopping"
        )
