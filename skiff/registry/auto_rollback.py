"""Roll production back when a serving alarm fires soon after a promotion, or at any time
when production's own artifact cannot be loaded; abort a running canary when a serving alarm
fires during it (production, which served the rest, stays).

An alarm long after the last promotion is not evidence against the newest model (traffic,
a dependency, a bad client…), so only an alarm within ``window_seconds`` of a promotion rolls
back. A repeated alarm event finds the last change is already a rollback and does nothing.

The "production unloadable" alarm (inference answering 503 model_unavailable) is different
evidence: it is checked directly — the production artifact is fetched and verified — and if
it really cannot be loaded, production goes back to the previous version whenever that is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from skiff.errors import ConflictError
from skiff.notify import Notice
from skiff.registry.table import ModelVersion, Registry


@dataclass(frozen=True)
class AutoRollbackOutcome:
    status: str  # "rolled-back", "canary-aborted", "skipped"
    reason: str
    version: str | None = None

    def notice(self, alarm_name: str) -> Notice | None:
        if self.status == "canary-aborted":
            return Notice(
                "canary-aborted",
                f"canary {self.version} aborted by alarm {alarm_name}; production unchanged",
                {"version": self.version, "alarm": alarm_name, "reason": self.reason},
            )
        if self.status != "rolled-back":
            return None
        return Notice(
            "rolled-back",
            f"production rolled back to {self.version} by alarm {alarm_name}",
            {"version": self.version, "alarm": alarm_name, "reason": self.reason},
        )


def rollback_on_alarm(
    registry: Registry,
    alarm_name: str,
    state: str,
    window_seconds: float,
    now: datetime | None = None,
    unloadable_alarm: str | None = None,
    production_problem: Callable[[ModelVersion], str | None] | None = None,
) -> AutoRollbackOutcome:
    """``production_problem`` says why a version's artifact cannot be loaded (None: it loads)."""
    if state != "ALARM":
        return AutoRollbackOutcome("skipped", f"alarm {alarm_name} is {state}, not ALARM")
    if alarm_name == unloadable_alarm and production_problem is not None:
        return _rollback_unloadable(registry, alarm_name, production_problem)
    running = registry.canary()
    if running is not None:
        reason = f"alarm {alarm_name} fired during the canary of {running.version}"
        if registry.abort_canary(reason, actor=f"alarm:{alarm_name}", version=running.version) is not None:
            return AutoRollbackOutcome("canary-aborted", reason, running.version)
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


def _rollback_unloadable(
    registry: Registry, alarm_name: str, production_problem: Callable[[ModelVersion], str | None]
) -> AutoRollbackOutcome:
    current = registry.production()
    if current is None:
        return AutoRollbackOutcome("skipped", "nothing is in production: nothing to roll back")
    problem = production_problem(current)
    if problem is None:  # a repeated event after the rollback, or a transient: the model loads
        return AutoRollbackOutcome("skipped", f"production {current.version} loads: nothing to undo")
    reason = f"alarm {alarm_name}: production {current.version} cannot be loaded ({problem[:300]})"
    try:
        change = registry.rollback(reason, actor=f"alarm:{alarm_name}")
    except ConflictError as exc:
        return AutoRollbackOutcome("skipped", f"{reason}; and {exc}")
    return AutoRollbackOutcome("rolled-back", reason, change.version)
