from django.apps import AppConfig


class DjangoFullctlConfig(AppConfig):
    name = "django_fullctl"
    label = "django_fullctl"
    verbose_name = "fullctl tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_fullctl import checks, conf

        conf.apply_pool_settings()
        checks.register()
