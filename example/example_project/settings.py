"""Settings of the example project: the demo, the tests and the container image use them.

Everything deployment-specific comes from the environment (twelve-factor style), so the
same image runs the web app, the pollers, the migrations and the operator.
"""

import os
from pathlib import Path

from example_project.database import database_from_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-example-key-only-for-local-use")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "*").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_fullctl",
    "example_tasks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # static files (the admin's CSS and JS) straight from the WSGI app, before anything else
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'example.sqlite3'}")
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # file-backed test database so threads and processes share it
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-example.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# Static files: `manage.py collectstatic` copies them to STATIC_ROOT with hashed, compressed
# copies and a manifest (the image does it at build time, into the read-only /app/static);
# WhiteNoise serves them from there with far-future cache headers. Before collectstatic has run
# (tests, development) pages link to the plain names and WhiteNoise finds them in the apps'
# static folders, so the admin looks the same with DEBUG on or off.
STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT") or BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "example_project.storage.StaticFilesStorage"},
}
# nothing collected (no manifest): WhiteNoise's development mode, files found on each request
WHITENOISE_USE_FINDERS = WHITENOISE_AUTOREFRESH = (
    DEBUG or not (STATIC_ROOT / "staticfiles.json").is_file()
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    # the poller's event lines: fullctl_poll_tasks adds its own stdout handler, in the
    # format of --log-format, to a logger whose records reach no handler
    "loggers": {"django_fullctl": {"propagate": False}},
}

# Settings that task qualifiers look at (see example_tasks.models.ImportantTask).
IMPORTANT_SETTING = False
IMPORTANT_LIST = []
