from django.apps import AppConfig


class FullctlTestappConfig(AppConfig):
    name = "tests.testapp"
    label = "fullctl_testapp"
    default_auto_field = "django.db.models.BigAutoField"
