"""Account owners made by the old ``createaccount`` were superusers: they become staff.

Before this change ``createaccount`` made every account's first login a superuser, so any
account's owner could read and change every other account in the admin. After it, only the
oldest superuser (on a one-account install: the operator) keeps that status; every other
superuser becomes staff of its own account, which keeps its admin access to everything of
that account. An operator who wants more superusers says so: ``createaccount --superuser``
or ``createsuperuser``. docs/accounts-and-tokens.md describes it.
"""

from django.db import migrations


def demote(apps, schema_editor):
    User = apps.get_model("gateway", "User")
    superusers = User.objects.filter(is_superuser=True).order_by("date_joined", "id")
    first = superusers.first()
    if first is not None:
        superusers.exclude(pk=first.pk).update(is_superuser=False, is_staff=True)


class Migration(migrations.Migration):
    dependencies = [("gateway", "0002_account_time_zone_validator")]

    operations = [migrations.RunPython(demote, migrations.RunPython.noop)]
