"""The poller: a supervisor process and its worker processes (``fullctl_poll_tasks``)."""
