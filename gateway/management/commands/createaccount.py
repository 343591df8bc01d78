"""Create an account and its first login in one step: ``manage.py createaccount EMAIL``."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway import services


class Command(BaseCommand):
    help = (
        "Create an account with one login: its owner, who can use the admin for this account "
        "only (unless --no-admin), or a superuser who sees every account (--superuser). "
        "Prints the password (generated unless given) and the account's API token."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("--password", help="Default: a generated one, printed once.")
        parser.add_argument("--name", help="Account name. Default: the email address.")
        parser.add_argument("--time-zone", default=None, help="IANA zone, e.g. Europe/Berlin.")
        access = parser.add_mutually_exclusive_group()
        access.add_argument(
            "--no-admin", action="store_true", help="A login without admin-site access."
        )
        access.add_argument(
            "--superuser",
            action="store_true",
            help="The server's operator: sees and changes every account in the admin.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        password = options["password"] or secrets.token_urlsafe(12)
        staff = not options["no_admin"]
        superuser = bool(options["superuser"])
        try:
            user = services.create_account(
                options["email"],
                password,
                name=options["name"] or "",
                time_zone=options["time_zone"],
                staff=staff,
                superuser=superuser,
            )
        except services.InvalidAccount as exc:
            raise CommandError(str(exc)) from None
        token = services.compat_token(user.account)
        self.stdout.write(f"Account {user.account.name!r} created.")
        role = "superuser (every account)" if superuser else "owner" if staff else "API only"
        self.stdout.write(f"  login:    {user.email}   ({role})")
        if not options["password"]:
            self.stdout.write(f"  password: {password}   (shown once)")
        self.stdout.write(f"  token:    {token}   (what /getdata/gettoken returns)")
