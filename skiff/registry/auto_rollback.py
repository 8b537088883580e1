"""Roll production back when a serving alarm fires soon after a promotion.

An alarm long after the last promotion is not evidence against the newest model (traffic,
a dependency, a bad client…), so only an alarm within ``window_seconds`` of a promotion rolls
back. A repeated alarm event finds the last change is already a rollback and does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from skiff.errors import ConflictError
from skiff.registry.table import Registry


@dataclass(frozen=True)
class AutoRollbackOutcome:
    status: str  # "rolled-back", "skipped"
    reason: str
    version: str | None = None


def rollback_on_alarm(
    registry: Registry, alarm_name: str, state: str, window_seconds: float, now: datetime | None = None
) -> AutoRollbackOutcome:
    if state != "ALARM":
        return AutoRollbackOutcome("skipped", f"alarm {alarm_name} is {state}, not ALARM")
    history = registry.history(limit=1)
    if not history or history[0].action != "promote":
        return AutoRollbackOutcome("skipped", "the last production change is not a promotion: nothing to undo")
    last = history[0]
    age = ((now or datetime.now(UTC)) - datetime.fromisoformat(last.at)).total_seconds()
    if age > window_seconds:
        return AutoRollbackOutcome(
            "skipped", f"promotion of {last.version} was {age:.0f}s ago, outside the {window_seconds:.0f}s window"
        )
    reason = f"alarm {alarm_name} fired {age:.0f}s after {last.version} was promoted"
    try:
        change = registry.rollback(reason, actor=f"alarm:{alarm_name}")
    except ConflictError as exc:
        return AutoRollbackOutcome("skipped", str(exc))
    return AutoRollbackOutcome("rolled-back", reason, change.version)
