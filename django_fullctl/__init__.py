"""fullctl-tasks: a task queue on the Django ORM and PostgreSQL."""
