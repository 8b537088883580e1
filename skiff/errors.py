"""One error hierarchy for the whole project.

Messages read "expected X (got: Y)" so that whoever sees one knows what to change.
HTTP status codes are mapped from these classes in one place (the API handlers), never here.
"""

from __future__ import annotations

from dataclasses import dataclass


class SkiffError(Exception):
    """Base of every error Skiff raises on purpose."""


class ConfigError(SkiffError):
    """A setting, hyperparameter or environment variable is missing or invalid."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, located as precisely as we can."""

    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message

    def to_dict(self) -> dict[str, object]:
        return {"line": self.line, "message": self.message}


class DatasetError(SkiffError):
    """A dataset file was rejected. Carries every problem found (up to a limit)."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("DatasetError needs at least one problem")
        self.source = source
        self.problems = list(problems)
        first = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(f"{source}: {first}{more}")

    @property
    def reason(self) -> str:
        return self.problems[0].message

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "reason": self.reason,
            "problems": [p.to_dict() for p in self.problems],
        }


class ArtifactError(SkiffError):
    """A model artifact is missing a file, has been altered, or is of an unknown format."""


class TrainingError(SkiffError):
    """Training ran but its result must not be used."""


class ParityError(TrainingError):
    """The int8 model disagrees with the fp32 model more than allowed."""


class RegistryError(SkiffError):
    """A model-registry operation cannot be done as asked."""


class NotFoundError(RegistryError):
    """The named model version (or route) does not exist."""


class ConflictError(RegistryError):
    """The operation contradicts the registry's state (wrong status, nothing to roll back to)."""


class NothingInProductionError(RegistryError):
    """No version has been promoted yet, so there is nothing to serve."""


class ModelUnavailableError(SkiffError):
    """Production names a version this container could not load, and it has nothing older."""


class RequestError(SkiffError):
    """A client sent a request that cannot be served as sent (HTTP 4xx)."""

    status_code = 400


class PayloadTooLargeError(RequestError):
    status_code = 413


class UnsupportedMediaTypeError(RequestError):
    status_code = 415
