"""ICE restart on aiortc's ICE transport, which has none: the aioice surgery, in one place.

aiortc (1.16) runs aioice's ``Connection.connect()`` once and has no ``restartIce``.
A listener whose network changes (Wi-Fi to cellular) needs one: its address changes,
so the nominated pair leads nowhere. An :class:`IceRestart` restarts one connection
in place, as RFC 8445 section 9 describes it for the side that did not ask:

- the connection keeps its sockets and local candidates (the server's address did
  not change), the DTLS and SRTP state above it (no new handshake), and the
  *object* of its nominated-pair dict, which :class:`~media_server.rtc.rtp_writer.
  RtpWriter` holds: the new pair replaces the old one in it, and the writer follows;
- it takes new local credentials and the remote side's new ones, forgets the remote
  candidates and the check list, and runs checks again: it answers the remote side's
  checks, sends its own to the new candidates (paced as aioice's ``connect()``
  paces them) and nominates what the controlling side nominates (or, when it is the
  controlling side, nominates aggressively, as aioice does);
- the old pair carries traffic until a new one is nominated, so a restart that never
  completes ends no session by itself: after :data:`RESTART_TIMEOUT_S` consent
  freshness (RFC 7675) runs again on the old pair, and expires as it would have.

Consent freshness is stopped while the checks run: on a dead path it would close the
connection (and aiortc the session) in the middle of a restart. It is started again
for the new pair; aioice's ``close()`` cancels and awaits it, as it does the first one.
A pair the remote side nominates while our own check of it still waits for a
retransmission is checked again at once (RFC 8445 section 7.3.1.4), so audio resumes
one round trip after the remote side's checks succeed, not 0.5 to 1.5 s later.

aiortc's ``localDescription`` keeps the first credentials: nothing reads them after
the answer, and the restart's answer fragment carries the new ones.

What this reaches into is named in :data:`CONNECTION_ATTRIBUTES`,
:data:`CONNECTION_METHODS`, :data:`PAIR_ATTRIBUTES` and :data:`TRANSPORT_ATTRIBUTES`;
:func:`missing_internals` lists what an installed aiortc/aioice lacks, and a restart
is refused (never half-done) when anything is missing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aioice.ice import CandidatePair

from media_server.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

RESTART_TIMEOUT_S: Final = 30.0
"""How long the checks of a restart may take before the old pair's consent decides.

Chromium gives up on a connection after about 30 s without a response, so a later
success would reach no one."""

CHECK_INTERVAL_S: Final = 0.02
"""One new check per interval: aioice's ``connect()`` pace (RFC 8445 Ta)."""

UFRAG_CHARS: Final = 8
PASSWORD_CHARS: Final = 24
ICE_CHARS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
"""``ice-char`` of RFC 8839 section 5.4."""

_UFRAG: Final = re.compile(r"[A-Za-z0-9+/]{4,256}")
_PASSWORD: Final = re.compile(r"[A-Za-z0-9+/]{22,256}")

CONNECTION_ATTRIBUTES: Final = (
    "_closing",
    "_components",
    "_check_list",
    "_check_list_done",
    "_local_password",
    "_local_username",
    "_nominated",
    "_nominating",
    "_query_consent_task",
    "_remote_candidates",
    "_remote_candidates_end",
    "ice_controlling",
    "remote_password",
    "remote_username",
)
"""What a restart reads or replaces on aioice's ``Connection`` (aioice 0.13)."""

CONNECTION_METHODS: Final = ("check_start_task", "query_consent", "request_received")
"""aioice's ``Connection`` methods a restart calls or relies on."""

PAIR_ATTRIBUTES: Final = ("nominated", "remote_nominated", "state", "task")
"""What a restart reads of aioice's ``CandidatePair``."""

TRANSPORT_ATTRIBUTES: Final = ("_connection", "iceGatherer", "state")
"""What a restart reads of aiortc's ``RTCIceTransport``; its gatherer's
``_remote_candidates_end`` is reset too (aiortc ignores candidates after it)."""


@dataclass(frozen=True)
class IceCredentials:
    """An ICE username fragment and password (``a=ice-ufrag``, ``a=ice-pwd``)."""

    ufrag: str
    pwd: str

    @classmethod
    def generate(cls) -> IceCredentials:
        """Fresh local credentials, from the system's secure source as aioice's own."""

        def chars(count: int) -> str:
            return "".join(secrets.choice(ICE_CHARS) for _ in range(count))

        return cls(chars(UFRAG_CHARS), chars(PASSWORD_CHARS))

    def check(self) -> None:
        """``ValueError`` unless both are well-formed (RFC 8839 section 5.4), as aioice
        checks them: a malformed one could never authenticate a check."""
        if not _UFRAG.fullmatch(self.ufrag):
            raise ValueError("a=ice-ufrag must be 4 to 256 ice-chars (letters, digits, '+', '/')")
        if not _PASSWORD.fullmatch(self.pwd):
            raise ValueError("a=ice-pwd must be 22 to 256 ice-chars (letters, digits, '+', '/')")


class RestartRefused(Exception):
    """The connection cannot be restarted now, and nothing of it was changed."""


class RestartUnsupported(Exception):
    """The connection can never be restarted here: its media are not on one bundled
    ICE transport, or this aiortc/aioice lacks what a restart needs."""


def missing_internals(transport: Any) -> list[str]:
    """The aiortc/aioice internals a restart needs that ``transport`` (an aiortc
    ``RTCIceTransport``) lacks; empty when a restart can be done."""
    missing = [f"RTCIceTransport.{n}" for n in TRANSPORT_ATTRIBUTES if not hasattr(transport, n)]
    if missing:
        return missing
    if not hasattr(transport.iceGatherer, "_remote_candidates_end"):
        missing.append("RTCIceGatherer._remote_candidates_end")
    connection = transport._connection
    missing += [
        f"Connection.{name}"
        for name in CONNECTION_ATTRIBUTES + CONNECTION_METHODS
        if not hasattr(connection, name)
    ]
    if not missing and not isinstance(connection._nominated, dict):
        missing.append("Connection._nominated as a dict")
    if not missing:
        for pair in connection._nominated.values():
            missing += [f"CandidatePair.{n}" for n in PAIR_ATTRIBUTES if not hasattr(pair, n)]
    if not all(hasattr(CandidatePair.State, s) for s in ("FROZEN", "WAITING", "IN_PROGRESS")):
        missing.append("CandidatePair.State.FROZEN/WAITING/IN_PROGRESS")
    return missing


def ice_transports(pc: Any) -> list[Any]:
    """The distinct ICE transports of an aiortc ``RTCPeerConnection``: one when all
    its media are bundled (browsers bundle everything)."""
    transports: dict[int, Any] = {}
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        if dtls is not None:
            transports[id(dtls.transport)] = dtls.transport
    if pc.sctp is not None:
        transports[id(pc.sctp.transport.transport)] = pc.sctp.transport.transport
    return list(transports.values())


class IceRestart:
    """Restarts of one aiortc ``RTCIceTransport``; owns the task that runs the newest
    restart's checks (:meth:`close` cancels and awaits it)."""

    def __init__(self, transport: Any, label: str, timeout_s: float = RESTART_TIMEOUT_S) -> None:
        self._transport = transport
        self._label = label
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._superseded: set[asyncio.Task[None]] = set()
        """Check tasks of aioice's that :meth:`_retrigger` cancelled: awaited on close."""
        self._starting = asyncio.Lock()
        """Two restarts asked for at once start one after the other."""
        self._closed = False
        self.on_settled: Callable[[bool], None] | None = None
        """Told when a restart's checks end: True with a new pair, False on timeout."""
        self.completed = 0
        self.failed = 0
        self.last_checks_s: float | None = None
        """How long the last completed restart took, from :meth:`begin` to its new
        nominated pair (the checks; the signaling round trip comes before)."""

    @classmethod
    def of(cls, pc: Any, label: str, timeout_s: float = RESTART_TIMEOUT_S) -> IceRestart:
        """The restarts of ``pc`` (an aiortc ``RTCPeerConnection``); raises
        :class:`RestartUnsupported` when they cannot be done."""
        transports = ice_transports(pc)
        if len(transports) != 1:
            raise RestartUnsupported(f"its media use {len(transports)} ICE transports, not one")
        missing = missing_internals(transports[0])
        if missing:
            logger.error("ICE restart impossible with this aiortc/aioice: %s", ", ".join(missing))
            raise RestartUnsupported("this server's aiortc/aioice version lacks what it needs")
        return cls(transports[0], label, timeout_s)

    def local_candidates(self) -> list[Any]:
        """The local candidates (aiortc ``RTCIceCandidate``), kept across restarts."""
        return list(self._transport.iceGatherer.getLocalCandidates())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def begin(
        self, remote: IceCredentials, local: IceCredentials | None = None
    ) -> IceCredentials:
        """Start a restart with the remote side's new credentials; returns the new
        local ones (``local``, or fresh ones: the side that asks for a restart chose
        its own before). A restart still running is superseded. Add the remote side's
        candidates afterwards, as trickled ones (they belong to the new generation).

        Raises :class:`RestartUnsupported` when aiortc/aioice lack what a restart
        needs, :class:`RestartRefused` when the connection is not connected (or is
        closing); either way the connection's ICE state is left as it was."""
        async with self._starting:
            return await self._begin(remote, local or IceCredentials.generate())

    async def _begin(self, remote: IceCredentials, local: IceCredentials) -> IceCredentials:
        missing = missing_internals(self._transport)
        if missing:
            raise RestartUnsupported(f"this aiortc/aioice lacks {', '.join(missing)}")
        connection = self._transport._connection
        if self._transport.state != "completed" or connection._closing or self._closed:
            raise RestartRefused(f"its ICE transport is {self._transport.state}")
        if not connection._nominated:
            raise RestartRefused("it has no nominated pair to keep meanwhile")
        await cancel_and_wait(self._task)
        # consent freshness of the old path would close the connection mid-restart
        consent = connection._query_consent_task
        connection._query_consent_task = None
        await cancel_and_wait(consent)
        # the old generation's checks end here, before their pairs are forgotten
        await cancel_and_wait(*(pair.task for pair in connection._check_list))
        if connection._closing or self._closed:  # closed while the above ended
            raise RestartRefused("its ICE connection is closing")
        previous = dict(connection._nominated)
        connection._local_username = local.ufrag
        connection._local_password = local.pwd
        connection.remote_username = remote.ufrag
        connection.remote_password = remote.pwd
        connection._remote_candidates.clear()
        connection._remote_candidates_end = False
        self._transport.iceGatherer._remote_candidates_end = False
        connection._check_list.clear()
        connection._nominating.clear()
        # _check_list_done stays True: aioice's own completion bookkeeping (for
        # connect(), which has returned) stays inert, and _run paces the checks
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(
            self._run(connection, previous, loop.time()), name=f"ice-restart-{self._label}"
        )
        logger.info(
            "ICE restart of %s: checks started", self._label, extra={"event": "ice.restart"}
        )
        return local

    async def _run(self, connection: Any, previous: dict[int, Any], started: float) -> None:
        loop = asyncio.get_running_loop()
        completed = False
        try:
            async with asyncio.timeout(self._timeout_s):
                retriggered: set[int] = set()
                while not self._nominated_anew(connection, previous):
                    if connection._closing:
                        return
                    self._retrigger(connection, retriggered)
                    self._check_next(connection)
                    await asyncio.sleep(CHECK_INTERVAL_S)
        except TimeoutError:
            self.failed += 1
            logger.warning(
                "ICE restart of %s: no new pair in %.0f s; consent on the old one decides",
                self._label,
                self._timeout_s,
                extra={"event": "ice.restart.failed"},
            )
        else:
            completed = True
            self.completed += 1
            self.last_checks_s = loop.time() - started
            logger.info(
                "ICE restart of %s: %s nominated after %.0f ms",
                self._label,
                connection._nominated.get(min(connection._components)),
                self.last_checks_s * 1000,
                extra={"event": "ice.restart.completed"},
            )
            # as connect() does once nominated: the checks left are not needed
            for pair in connection._check_list:
                if pair.task is not None:
                    pair.task.cancel()
        if not connection._closing and connection._query_consent_task is None:
            connection._query_consent_task = loop.create_task(connection.query_consent())
        if self.on_settled is not None:
            self.on_settled(completed)

    @staticmethod
    def _nominated_anew(connection: Any, previous: dict[int, Any]) -> bool:
        """Every component nominated before has a nominated pair of the new generation.

        ``previous``'s components, not the connection's: aioice drops a component from
        those when end-of-candidates comes before any candidate for it (as from a client
        that trickles a restart's candidates after it), and over none the restart would
        count as complete at once, its checks as taking no time."""
        for component in previous:
            pair = connection._nominated.get(component)
            if pair is None or pair is previous.get(component) or not pair.nominated:
                return False
        return True

    def _retrigger(self, connection: Any, retriggered: set[int]) -> None:
        """Check again, at once, a pair the remote side nominated while our own check
        of it is still retransmitting (RFC 8445 section 7.3.1.4; aioice lets it run).

        Its first request often went out before the remote side could answer it (its
        NAT not yet open for us, or our new credentials not yet known to it), and the
        next retransmission is 0.5 to 1.5 s away: the time audio would stay off."""
        for pair in connection._check_list:
            task = pair.task
            if (
                pair.remote_nominated
                and pair.state == CandidatePair.State.IN_PROGRESS
                and task is not None
                and id(pair) not in retriggered
            ):
                retriggered.add(id(pair))
                task.cancel()
                self._superseded.add(task)
                task.add_done_callback(self._superseded.discard)
                pair.task = None
                pair.state = CandidatePair.State.WAITING
                connection.check_start_task(pair)

    @staticmethod
    def _check_next(connection: Any) -> None:
        """Start the check of the highest-priority waiting pair, else frozen pair: what
        aioice's ``_check_periodic`` does, without its check-list-done guard."""
        for state in (CandidatePair.State.WAITING, CandidatePair.State.FROZEN):
            for pair in connection._check_list:
                if pair.state == state and pair.task is None:
                    connection.check_start_task(pair)
                    return

    async def close(self) -> None:
        """End the restart in progress; none starts afterwards (call it before the
        peer connection closes: a restart's task must not outlive its connection)."""
        self._closed = True
        await cancel_and_wait(self._task, *self._superseded)
        self._task = None
