"""The session's generations, on their own: concurrency, bounds and failures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from flsync.session import (
    Session,
    SessionUnusable,
    SignInRefused,
    TooManySignIns,
)


def run(coroutine: Any) -> Deferred[Any]:
    """A coroutine as a Deferred pytest-twisted can wait for (see scrapy-notes)."""
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


class FakeSite:
    """Counts sign-ins; each one takes a moment, so that many requests can meet it."""

    def __init__(self, refuse: bool = False) -> None:
        self.sign_ins = 0
        self.refuse = refuse
        self.slept: list[float] = []
        self.now = 100.0

    async def sign_in(self) -> None:
        self.sign_ins += 1
        await asyncio.sleep(0.01)
        if self.refuse:
            raise SignInRefused("Sign-in refused for u@example.org: Invalid email or password.")

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += max(seconds, 0)

    def session(self, **kwargs: Any) -> Session:
        options = {"holder": "u@example.org", "max_renewals": 100, "renewal_wait": 1.0}
        return Session(
            self.sign_in, sleep=self.sleep, clock=lambda: self.now, **{**options, **kwargs}
        )


async def gather(*coroutines: Any) -> list[Any]:
    return await asyncio.gather(*coroutines, return_exceptions=True)


@pytest_twisted.ensureDeferred
async def test_many_first_requests_share_one_sign_in():
    site = FakeSite()
    session = site.session()
    generations = await run(gather(*(session.ready() for _ in range(20))))
    assert generations == [1] * 20
    assert site.sign_ins == 1


@pytest_twisted.ensureDeferred
async def test_an_expiry_of_the_current_generation_signs_in_once_for_all():
    site = FakeSite()
    session = site.session()
    await run(session.ready())
    session.answered(1)
    await run(gather(*(session.expired(1) for _ in range(16))))
    assert site.sign_ins == 2
    assert session.generation == 2


@pytest_twisted.ensureDeferred
async def test_an_expiry_of_an_older_generation_only_resends():
    site = FakeSite()
    session = site.session()
    await run(session.ready())
    session.answered(1)
    await run(session.expired(1))
    session.answered(2)
    # A request that left under generation 1, answered after the second sign-in.
    await run(session.expired(1))
    assert site.sign_ins == 2
    assert session.generation == 2


@pytest_twisted.ensureDeferred
async def test_the_cookie_plays_no_part():
    # The same answers in the same order, whatever the cookie did: nothing but generations
    # is looked at, so there is nothing to look at here but the count of sign-ins.
    site = FakeSite()
    session = site.session()
    for generation in range(1, 6):
        assert await run(session.ready()) == generation
        session.answered(generation)
        await run(gather(session.expired(generation), session.expired(generation - 1)))
    assert site.sign_ins == 6


@pytest_twisted.ensureDeferred
async def test_a_session_that_serves_nothing_stops_everything():
    site = FakeSite()
    session = site.session()
    await run(session.ready())
    results = await run(gather(*(session.expired(1) for _ in range(5))))
    assert all(isinstance(r, SessionUnusable) for r in results)
    assert "Signed in as u@example.org, but the site answered the next request" in str(results[0])
    with pytest.raises(SessionUnusable):
        await run(session.ready())
    assert site.sign_ins == 1


@pytest_twisted.ensureDeferred
async def test_a_refused_sign_in_fails_every_waiting_and_later_request():
    site = FakeSite(refuse=True)
    session = site.session()
    results = await run(gather(*(session.ready() for _ in range(8))))
    assert all(isinstance(r, SignInRefused) for r in results)
    with pytest.raises(SignInRefused):
        await run(session.expired(0))
    assert site.sign_ins == 1


@pytest_twisted.ensureDeferred
async def test_sign_ins_are_spaced_by_the_wait():
    site = FakeSite()
    session = site.session(renewal_wait=2.0)
    await run(session.ready())  # the first one does not wait
    session.answered(1)
    site.now += 0.5
    await run(session.expired(1))
    assert site.slept == [1.5]


@pytest_twisted.ensureDeferred
async def test_sign_ins_are_capped():
    site = FakeSite()
    session = site.session(max_renewals=3)
    for generation in (1, 2, 3):
        await run(session.ready())
        session.answered(generation)
        if generation < 3:
            await run(session.expired(generation))
    with pytest.raises(TooManySignIns, match=r"Signed in as u@example\.org 3 times"):
        await run(session.expired(3))
    assert site.sign_ins == 3


@pytest_twisted.ensureDeferred
async def test_only_the_newest_session_is_current_and_not_while_signing_in():
    site = FakeSite()
    session = site.session()
    assert await run(session.ready()) == 1
    assert session.is_current(1)
    session.answered(1)
    renewal = asyncio.ensure_future(session.expired(1))
    await run(asyncio.sleep(0))  # the second sign-in is under way
    assert not session.is_current(1)
    await run(renewal)
    assert session.is_current(2) and not session.is_current(1)
