from django.apps import AppConfig


class E2ETasksConfig(AppConfig):
    name = "tests.e2e.e2e_tasks"
    label = "fullctl_e2e"
    default_auto_field = "django.db.models.BigAutoField"
