"""``Poller``: one row per running poller (supervisor), kept fresh by the poller itself.

It answers "who is serving which op" for ``fullctl_tasks status``, the admin overview and
the operator, and carries the operator's request to stop claiming (drain before scale-in).
Every read and write goes through ``Poller.fleet`` (``django_fullctl.pollers``).
"""

from django.db import models

from django_fullctl.pollers import PollerFleet


class Poller(models.Model):
    """A live (or lately silent) poller: its identity, what it claims, how busy it is."""

    class Mode(models.TextChoices):
        PROCESSES = "processes", "processes (self-claiming workers)"
        WORKERS = "workers", "workers (the supervisor assigns)"

    host = models.CharField(max_length=255, help_text="HOSTNAME: on Kubernetes, the pod's name")
    pid = models.PositiveIntegerField(help_text="the supervisor's process id")
    worker_id = models.CharField(
        max_length=255, help_text="the supervisor's id in the logs (TASK_ORM_WORKER_ID:pid)"
    )
    mode = models.CharField(max_length=16, choices=Mode.choices)
    ops = models.JSONField(default=list, help_text="the ops it claims (its qualified ops)")
    slots = models.PositiveIntegerField(help_text="worker processes it runs at most")
    busy_slots = models.PositiveIntegerField(default=0, help_text="workers running a task")
    started = models.DateTimeField(help_text="when it started (the database's clock)")
    last_seen = models.DateTimeField(help_text="its last refresh (the database's clock)")
    draining = models.BooleanField(default=False, help_text="stopping (SIGTERM)")
    claiming_paused = models.BooleanField(
        default=False, help_text="stop claiming requested (the operator drains this pod)"
    )
    claiming_paused_at = models.DateTimeField(
        null=True, blank=True, help_text="when stop claiming was requested"
    )
    claiming_stopped = models.BooleanField(
        default=False, help_text="the poller acknowledged: it claims no new task"
    )

    objects = models.Manager()
    fleet = PollerFleet()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["host", "pid"], name="fullctl_poller_host_pid"),
        ]
        verbose_name = "poller"

    def __str__(self) -> str:
        return f"{self.host}:{self.pid} ({self.mode}, {self.busy_slots}/{self.slots} busy)"
