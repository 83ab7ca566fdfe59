"""What one hub connection holds for its client, and the bounds on it.

Frames are queued for the transport; a transport ``take``s them all and reports them
``written`` once on the wire (until then they are in flight); with stateful reconnect every
trackable frame is also kept, under its sequence id, until the client acknowledges it. All
three count against the connection's bounds in bytes and messages; the connection closes
a client whose next frame would break them (``HubConnection._overflow``). Pure bookkeeping:
no I/O, no clock, no events.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from colaflow_mcp.hub import protocol as p


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int
    outbound_queue_size: int  # messages queued or in flight to the transport
    max_queued_bytes: int = 4 * 1024 * 1024  # held for the client, replay included
    drain_timeout: float = 30.0  # how long input may wait for the transport to drain


class Outbound:
    """One connection's queue, in-flight count and replay buffer."""

    __slots__ = ("limits", "frames", "_bytes", "_inflight", "_replay", "_replay_bytes",
                 "_seq", "_commits", "_commits_taken")  # one per connection: no instance dict

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.frames: list[str] = []  # queued for the transport, in order
        self._bytes = 0  # bytes in ``frames`` (control frames aside, see ``control``)
        self._inflight = 0  # bytes taken by the transport and not yet written
        self._replay: deque[tuple[int, str]] | None = None  # once stateful
        self._replay_bytes = 0
        self._seq = 0  # the last sequence id given to a tracked frame
        # Commit times of the decisions among the queued frames, then among those taken:
        # returned by ``written`` (for colaflow_notify_seconds). Lists only while any.
        self._commits: list[float] | None = None
        self._commits_taken: list[float] | None = None

    @property
    def held(self) -> int:
        """Bytes held for the client: queued, in flight, kept for replay."""
        return self._bytes + self._inflight + self._replay_bytes

    def refusal(self, size: int, tracked: bool) -> str | None:
        """Why one more frame of ``size`` bytes would break the bounds, else None."""
        limits = self.limits
        # A tracked frame is held twice until written: queued and kept for replay.
        if self.held + (2 * size if tracked else size) > limits.max_queued_bytes:
            return f"more than {limits.max_queued_bytes} bytes queued"
        if len(self.frames) >= limits.outbound_queue_size:
            return f"more than {limits.outbound_queue_size} messages queued"
        return None

    def push(self, text: str, size: int, tracked: bool) -> None:
        """Queue a frame (the caller checked :meth:`refusal`); keep it for replay if
        ``tracked``."""
        if tracked:
            replay = self._replay
            if replay is None:
                replay = self._replay = deque()
            self._seq += 1
            replay.append((self._seq, text))
            self._replay_bytes += size
        self.frames.append(text)
        self._bytes += size

    def control(self, text: str) -> None:
        """Queue a handshake answer or a Close: never refused, never replayed."""
        self.frames.append(text)

    def note_commit(self, committed_at: float) -> None:
        """The frame just queued carries a decision committed at ``committed_at``."""
        commits = self._commits
        if commits is None:
            self._commits = [committed_at]
        else:
            commits.append(committed_at)

    def take(self) -> list[str]:
        """All queued frames, in order; in flight until :meth:`written`."""
        frames = self.frames
        self.frames = []
        commits = self._commits
        if commits is not None:
            self._commits = None
            taken = self._commits_taken
            self._commits_taken = commits if taken is None else taken + commits
        self._inflight += self._bytes
        self._bytes = 0
        return frames

    def written(self) -> Sequence[float]:
        """The transport wrote everything it took: the commit times of the decisions among
        it (see :meth:`note_commit`)."""
        self._inflight = 0
        taken = self._commits_taken
        if taken is None:
            return ()
        self._commits_taken = None
        return taken

    def backlog_high(self) -> bool:
        """Whether the transport's backlog is over the flow-control high-water mark (a
        quarter of the bytes, half of the messages)."""
        limits = self.limits
        return (self._bytes + self._inflight >= max(1, limits.max_queued_bytes // 4)
                or len(self.frames) >= max(1, limits.outbound_queue_size // 2))

    def start_replay(self) -> None:
        """Stateful reconnect was agreed: keep tracked frames from now on."""
        self._replay = deque()

    def ack(self, sequence_id: int) -> None:
        """The client has every frame up to ``sequence_id``: forget them."""
        replay = self._replay
        while replay and replay[0][0] <= sequence_id:
            self._replay_bytes -= p.wire_size(replay.popleft()[1])

    def rewind(self) -> None:
        """A new socket: the queue is a Sequence message, then every unacknowledged frame
        (already counted once, as kept for replay)."""
        replay = self._replay or ()
        first = replay[0][0] if replay else self._seq + 1
        sequence = p.sequence_message(first)
        self.frames = [sequence, *(text for _, text in replay)]
        self._bytes = p.wire_size(sequence)
        self._inflight = 0

    def discard(self) -> None:
        """Drop what is queued and in flight (a client that does not read)."""
        self.frames = []
        self._bytes = self._inflight = 0
        self._commits = self._commits_taken = None

    def end_replay(self) -> None:
        """Closed: the connection is never resumed."""
        self._replay = None
        self._replay_bytes = 0
