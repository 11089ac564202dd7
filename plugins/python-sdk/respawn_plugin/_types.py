"""The ABI's values in Python: phases, modes, the context of a call, failures and the records host calls return.

They mirror `plugins/wit/plugin.wit` (package respawn:plugin@0.2.0) without depending on the generated bindings,
so the same plugin code runs inside a component and under `respawn_plugin.testing.MockHost`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import List, Optional, Tuple


class Phase(str, enum.Enum):
    """The phase of a step a call belongs to. Compares equal to its WIT name: `Phase.PLAN == "plan"`."""

    #: Say what apply would do. No side effects: store writes, exec and non-GET/HEAD HTTP are denied.
    PLAN = "plan"
    #: Create what the step describes. Idempotent: re-applying a completed step changes nothing.
    APPLY = "apply"
    #: Check what apply created.
    VERIFY = "verify"
    #: Undo apply. Succeeds when there is nothing left to undo.
    DESTROY = "destroy"

    def __str__(self) -> str:
        return self.value


class Mode(str, enum.Enum):
    """The mode of the whole run."""

    PLAN = "plan"
    DRILL = "drill"
    FAILOVER = "failover"

    def __str__(self) -> str:
        return self.value


class FailureKind(str, enum.Enum):
    """What went wrong, as the report shows it. Only `unavailable` is retryable by default."""

    INVALID_INPUT = "invalid-input"
    DENIED = "denied"
    NOT_FOUND = "not-found"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"
    VERIFICATION_FAILED = "verification-failed"
    INTERNAL = "internal"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Context:
    """Who is calling: the run, the step, the operation (the part of `uses:` after the `/`), the phase, the attempt
    (1 for the first of this phase of this step) and the run's mode."""

    run_id: str
    step_id: str
    operation: str
    phase: Phase
    attempt: int
    mode: Mode


class Failure(Exception):
    """A step's failure: raise it from an operation (or let a host call raise it) to fail the step.

    `retryable` defaults to true for `unavailable` only; the runner retries a failed attempt only when it is
    true and the step's `retry:` allows another attempt. Write messages that say what was expected and what was
    found: they go into the report as they are.
    """

    def __init__(self, kind: FailureKind | str, message: str, retryable: Optional[bool] = None):
        kind = FailureKind(kind)
        super().__init__(message)
        self.kind: FailureKind = kind
        self.message: str = message
        self.retryable: bool = kind is FailureKind.UNAVAILABLE if retryable is None else bool(retryable)

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"

    def __repr__(self) -> str:
        return f"Failure({self.kind.value!r}, {self.message!r}, retryable={self.retryable})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Failure):
            return NotImplemented
        return (self.kind, self.message, self.retryable) == (other.kind, other.message, other.retryable)

    def __hash__(self) -> int:
        return hash((self.kind, self.message, self.retryable))

    def with_retryable(self, retryable: bool) -> "Failure":
        """The same failure with `retryable` overridden, e.g. `Failure.unavailable("quota").with_retryable(False)`."""
        return Failure(self.kind, self.message, retryable)

    @classmethod
    def invalid_input(cls, message: str) -> "Failure":
        """Params are wrong (unknown field, bad value), or the operation is unknown."""
        return cls(FailureKind.INVALID_INPUT, message)

    @classmethod
    def denied(cls, message: str) -> "Failure":
        """The plugin was refused something. Start the message with the capability and a colon
        (`files: read /etc/x: ...`): the runner reports the text before the first `:` as the capability."""
        return cls(FailureKind.DENIED, message)

    @classmethod
    def not_found(cls, message: str) -> "Failure":
        return cls(FailureKind.NOT_FOUND, message)

    @classmethod
    def conflict(cls, message: str) -> "Failure":
        return cls(FailureKind.CONFLICT, message)

    @classmethod
    def unavailable(cls, message: str) -> "Failure":
        """Transient trouble (network, a busy service): retryable."""
        return cls(FailureKind.UNAVAILABLE, message)

    @classmethod
    def verification_failed(cls, message: str) -> "Failure":
        """A check ran and the answer was wrong."""
        return cls(FailureKind.VERIFICATION_FAILED, message)

    @classmethod
    def internal(cls, message: str) -> "Failure":
        return cls(FailureKind.INTERNAL, message)


@dataclass(frozen=True)
class OperationInfo:
    name: str
    description: str
    #: JSON Schema of the operation's `with:` params, as JSON text.
    params_schema: str


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    operations: List[OperationInfo]
    #: Documentation for `respawn plugin inspect`; grants always come from the workflow.
    capabilities: List[str]


@dataclass(frozen=True)
class ObjectMeta:
    """One object of a store: `stores.head` and `stores.list`."""

    key: str
    size: int
    #: Seconds since the Unix epoch.
    last_modified: int


@dataclass(frozen=True)
class CopyResult:
    """What `stores.copy` copied: its length and lowercase hex sha256."""

    bytes: int
    sha256: str


@dataclass(frozen=True)
class ExecRequest:
    """A program to run: what `exec.run` and `exec.spawn_service` send to the host."""

    program: str
    args: List[str] = field(default_factory=list)
    cwd: Optional[str] = None
    env: List[Tuple[str, str]] = field(default_factory=list)
    timeout_ms: Optional[int] = None


@dataclass(frozen=True)
class ExecOutput:
    """A finished program: exit status (-1 when killed by a signal) and captured output."""

    status: int
    stdout: bytes
    stderr: bytes
    #: True when output past the step's `limits.log` was dropped.
    truncated: bool = False

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


@dataclass(frozen=True)
class UnpackResult:
    """An image restored by `images.unpack`."""

    manifest_digest: str
    files: int
    bytes: int
    #: When the image was made (seconds since the Unix epoch), if its config records it.
    created: Optional[int]


@dataclass(frozen=True)
class CompareResult:
    """`images.compare`: how many regular files were checked, and the paths missing or different."""

    checked: int
    mismatches: List[str]
