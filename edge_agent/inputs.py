"""What the agent's loop drains beside the spool (:class:`Input`: MQTT) and tells of
each stored batch (:data:`Listener`: the MQTT alarms)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from edge_agent.predict import Batch

if TYPE_CHECKING:
    from edge_agent.agent import Agent


class Input(Protocol):
    """A source of readings beside the spool (MQTT): drained by the agent's loop."""

    def due_in(self) -> float | None:
        """Seconds until it wants draining (0: now); None: nothing waiting."""

    def drain(self, agent: Agent) -> int:
        """Score what is waiting through :meth:`Agent.accept`; how many messages."""

    def close(self) -> None: ...


Listener = Callable[[Batch], None]
