from django.urls import path

from django_fullctl import metrics_view, views

app_name = "django_fullctl"

# both spellings answer directly: a probe must not be sent through a redirect
urlpatterns = [
    path("health", views.health, name="health"),
    path("health/", views.health, name="health-slash"),
    path("metrics", metrics_view.metrics, name="metrics"),  # off unless TASK_METRICS_VIEW
]
