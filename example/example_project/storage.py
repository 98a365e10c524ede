"""The example project's static files storage: WhiteNoise's compressed manifest storage that
also works before ``collectstatic`` has run."""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    """``collectstatic`` writes hashed, compressed copies and ``staticfiles.json`` to
    ``STATIC_ROOT``, and pages link to the hashed names (cacheable forever).

    Without a manifest (nothing collected yet: the tests, a development checkout) pages link to
    the plain names instead of failing with "Missing staticfiles manifest entry"; WhiteNoise then
    serves those from the apps' static folders (``WHITENOISE_USE_FINDERS`` in the settings).
    """

    def stored_name(self, name: str) -> str:
        if not self.hashed_files:
            return name
        return super().stored_name(name)
