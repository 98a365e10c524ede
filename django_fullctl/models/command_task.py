"""``CommandTask``: the task that runs a queued management command (``-Q``) in a poller.

Its parameters are the command's name and the argv to replay; ``run`` calls the command
with ``call_command`` and returns what it wrote to its stdout, which becomes the task's
result. A ``CommandError`` or a non-zero ``SystemExit`` fails the task with its message.

It is part of the models package so that every process that loads the app (pollers
included) knows the ``fullctl_command`` op.
"""

from collections.abc import Sequence
from io import StringIO
from typing import Any

from django.core.management import call_command, get_commands
from django.core.management.base import CommandError

from django_fullctl.models.task import Task
from django_fullctl.registry import register


def check_command(name: str) -> None:
    """Raise ``CommandError`` unless ``name`` is a management command of this project."""
    if not isinstance(name, str) or name not in get_commands():
        raise CommandError(
            f"unknown command {name!r}: it is not a management command of this project"
        )


def _command_and_argv(command: str, argv: Sequence[str] = ()) -> tuple[str, list[str]]:
    check_command(command)
    if isinstance(argv, str) or not all(isinstance(word, str) for word in argv):
        raise TypeError(f"the argv of a queued command must be a list of strings: {argv!r}")
    return command, list(argv)


@register
class CommandTask(Task):
    """Runs ``manage.py <command> <argv...>`` in a worker; the result is its stdout."""

    class Meta:
        proxy = True
        verbose_name = "queued command"

    class HandleRef:
        tag = "fullctl_command"

    @classmethod
    def create_task(
        cls, *args: Any, parent: Task | None = None, timeout: int | None = None, **kwargs: Any
    ) -> Task:
        """Queue ``create_task(command, argv=())``: ``argv`` is the words after the name.

        An unknown command raises ``CommandError`` and nothing is stored.
        """
        command, argv = _command_and_argv(*args, **kwargs)
        return super().create_task(command, argv, parent=parent, timeout=timeout)

    def run(self, command: str, argv: list[str], *args: Any, **kwargs: Any) -> str:
        stdout, stderr = StringIO(), StringIO()
        try:
            call_command(command, *argv, stdout=stdout, stderr=stderr)
        except CommandError as exc:
            raise CommandError(_failure(command, str(exc), stderr)) from None
        except SystemExit as exc:
            if exc.code not in (None, 0):
                status = exc.code if isinstance(exc.code, int) else f"1 ({exc.code})"
                raise CommandError(
                    _failure(command, f"exited with status {status}", stderr)
                ) from None
        return stdout.getvalue()


def _failure(command: str, message: str, stderr: StringIO) -> str:
    text = f"{command}: {message}"
    errors = stderr.getvalue().strip()
    return f"{text}\n{errors}" if errors else text
