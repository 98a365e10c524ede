"""Errors raised by the task API."""


class TaskError(Exception):
    """Base class of every fullctl task error."""


class TaskLimitError(TaskError):
    """Creating the task would exceed its ``TaskMeta.limit``."""

    def __init__(self, op: str, limit_id: str, limit: int):
        self.op, self.limit_id, self.limit = op, limit_id, limit
        super().__init__(
            f"task {op!r} already has {limit} pending or running instance(s)"
            f" for limit id {limit_id!r}"
        )


class TaskNotRegistered(TaskError, LookupError):
    """No registered task class carries this op."""


class TaskRegistrationError(TaskError, TypeError):
    """A class handed to ``register`` cannot be a task class."""


class TaskStateError(TaskError):
    """The task is not in a state that allows the requested change."""


class TaskTimedOut(BaseException):
    """Raised inside a task that ran past its timeout (the poller's soft stop).

    A BaseException so that a task's own ``except Exception`` does not swallow it; name it
    in ``Retry(on=...)`` to retry timed-out attempts.
    """


class TaskTimeout(TaskError, TimeoutError):
    """``wait()`` gave up before the task finished."""
