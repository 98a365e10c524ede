from django.apps import AppConfig


class ExampleTasksConfig(AppConfig):
    name = "example_tasks"
    default_auto_field = "django.db.models.BigAutoField"
