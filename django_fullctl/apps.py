from django.apps import AppConfig


class DjangoFullctlConfig(AppConfig):
    name = "django_fullctl"
    label = "django_fullctl"
    verbose_name = "fullctl tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_fullctl import checks, conf

        # the proxy task class of Django's Tasks API, registered under the op of every
        # configured queue, so that pollers know those ops before anyone enqueues
        from django_fullctl.tasks_backend import calls  # noqa: F401

        conf.apply_pool_settings()
        checks.register()
