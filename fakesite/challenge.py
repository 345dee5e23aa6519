"""Cloudflare's script challenge in front of the site, as the imitation plays it.

With ``Faults.script_challenge`` on (docs/site-model.md, "In front of the site"), a request
without a valid ``cf_clearance`` cookie gets the ``403`` "Just a moment..." page with
``cf-mitigated: challenge``, whose inline script works out a small puzzle from the page (a
32-bit FNV-1a hash of a nonce, run on for ``ROUNDS`` more bytes), POSTs the answer as JSON
(``{"nonce": ..., "answer": ...}``) to ``SOLVE_PATH`` and, once that sets the cookie, reloads
the page. A clearance is honoured only with the ``User-Agent`` that earned it and only for
the pass lifetime given when it was earned: a client that runs no scripts never gets one.

Works on plain HTTP as on HTTPS (where the cookie is also ``Secure``); on HTTPS it stands
behind the TLS wall (wall.py), which refuses a client before its request is read.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable

from fakesite.app import Reply
from fakesite.wall import CHALLENGE_HEADERS, CHALLENGE_PAGE

CLEARANCE_COOKIE = "cf_clearance"
SOLVE_PATH = "/cdn-cgi/challenge-platform/solve"
ROUNDS = 20_000  # a few milliseconds in a browser, a few more in Python to check
_FNV_OFFSET, _FNV_PRIME = 0x811C9DC5, 0x01000193
_NONCES_KEPT = 1000  # puzzles handed out and not yet solved; the oldest are forgotten
# As Cloudflare's: the cookie outlives the pass, which the server alone decides.
_COOKIE_MAX_AGE = 365 * 24 * 3600

_SCRIPT = """<script>
(async () => {
  const nonce = "%(nonce)s", rounds = %(rounds)d;
  // 32-bit FNV-1a over the nonce's bytes, then over the low bytes of 0, 1, ... rounds - 1.
  let hash = 0x811c9dc5;
  const mix = (byte) => { hash = Math.imul(hash ^ byte, 0x01000193) >>> 0; };
  for (const byte of new TextEncoder().encode(nonce)) mix(byte);
  for (let i = 0; i < rounds; i++) mix(i & 0xff);
  const response = await fetch("%(solve)s", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({nonce, answer: hash}),
  });
  if (response.ok) {
    location.reload();  // now with the cf_clearance cookie
  } else {
    document.getElementById("challenge-running").textContent = "Verification failed.";
  }
})();
</script>
"""


def solution(nonce: str, rounds: int = ROUNDS) -> int:
    """The answer the page's script works out for ``nonce``."""
    value = _FNV_OFFSET
    for byte in [*nonce.encode(), *(i & 0xFF for i in range(rounds))]:
        value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return value


class Challenges:
    """The puzzles handed out and the clearances earned, shared by the server's threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._nonces: dict[str, bool] = {}  # used as an ordered set: the oldest go first
        # cf_clearance value -> (the User-Agent that earned it, when it stops holding, the
        # requests it still holds for, or None: any number).
        self._clearances: dict[str, tuple[str, float, int | None]] = {}

    def cleared(self, clearance: str | None, user_agent: str) -> bool:
        """Whether the request's cookie is a clearance earned with this User-Agent, still held."""
        if not clearance:
            return False
        with self._lock:
            held = self._clearances.get(clearance)
            if held is None:
                return False
            earned_by, expires, uses = held
            if self._clock() >= expires or uses == 0:
                del self._clearances[clearance]  # passed: the challenge comes back
                return False
            if uses is not None:
                self._clearances[clearance] = (earned_by, expires, uses - 1)
        return secrets.compare_digest(earned_by.encode(), user_agent.encode())

    def challenge(self) -> Reply:
        """The 403 page with a fresh puzzle."""
        nonce = secrets.token_hex(16)
        with self._lock:
            self._nonces[nonce] = True
            while len(self._nonces) > _NONCES_KEPT:
                del self._nonces[next(iter(self._nonces))]
        script = _SCRIPT % {"nonce": nonce, "rounds": ROUNDS, "solve": SOLVE_PATH}
        page = CHALLENGE_PAGE.replace("</body>", script + "</body>")
        headers = [*CHALLENGE_HEADERS, ("CF-RAY", f"{secrets.token_hex(8)}-LHR")]
        return Reply(403, headers, page.encode())

    def solve(
        self, body: bytes, user_agent: str, pass_seconds: float, secure: bool, requests: int = 0
    ) -> Reply:
        """The answer to a POST to SOLVE_PATH: a clearance cookie if the puzzle is solved,
        holding for ``pass_seconds`` and, if above 0, for that many ``requests``.

        A nonce serves once, right or wrong, and only if this server handed it out.
        """
        try:
            answer = json.loads(body)
            nonce, value = str(answer["nonce"]), answer["answer"]
        except (ValueError, TypeError, KeyError):
            return _json(400, {"success": False, "error": "bad request"})
        with self._lock:
            issued = self._nonces.pop(nonce, False)
        if not issued or value != solution(nonce):
            return _json(403, {"success": False})
        clearance = secrets.token_urlsafe(32)
        with self._lock:
            self._clearances[clearance] = (
                user_agent,
                self._clock() + pass_seconds,
                requests or None,
            )
        cookie = (
            f"{CLEARANCE_COOKIE}={clearance}; Path=/; Max-Age={_COOKIE_MAX_AGE}; HttpOnly; "
            f"SameSite=Lax{'; Secure' if secure else ''}"
        )
        reply = _json(200, {"success": True})
        reply.headers.append(("Set-Cookie", cookie))
        return reply


def _json(status: int, value: object) -> Reply:
    headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
    return Reply(status, headers, json.dumps(value).encode())
