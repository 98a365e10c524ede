"""``manage.py fullctl_promote_user USERNAME [-Q]``: make a user staff and superuser."""

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from django_fullctl.management.base import CommandInterface


class Command(CommandInterface):
    help = "Make the user USERNAME staff and superuser (-Q: do it in a poller)."

    def add_arguments(self, parser):
        parser.add_argument("username", help="the user's username (USERNAME_FIELD)")

    def run(self, *args, username: str, **options):
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            raise CommandError(f"there is no user with the username {username!r}") from None
        if user.is_staff and user.is_superuser:
            self.stdout.write(f"{username} is already a superuser")
            return
        user.is_staff = True
        user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
        self.stdout.write(f"{username} is now a superuser")
