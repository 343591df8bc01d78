"""Create an account and its first login in one step: ``manage.py createaccount EMAIL``."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_email
from django.db import transaction

from gateway.models import Account, User
from gateway.services import compat_token


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
        email = options["email"].strip().lower()
        try:
            validate_email(email)
        except ValidationError:
            raise CommandError(f"Not an email address: {email!r}") from None
        if User.objects.filter(email=email).exists():
            raise CommandError(f"A login with the email {email} already exists")
        password = options["password"] or secrets.token_urlsafe(12)
        staff = not options["no_admin"]
        superuser = bool(options["superuser"])
        with transaction.atomic():
            account = Account(name=options["name"] or email)
            if options["time_zone"]:
                account.time_zone = options["time_zone"]
            try:
                account.full_clean()
            except ValidationError as exc:
                raise CommandError("; ".join(exc.messages)) from None
            account.save()
            User.objects.create_user(
                email, password, account=account, is_staff=staff, is_superuser=superuser
            )
        token = compat_token(account)
        self.stdout.write(f"Account {account.name!r} created.")
        role = "superuser (every account)" if superuser else "owner" if staff else "API only"
        self.stdout.write(f"  login:    {email}   ({role})")
        if not options["password"]:
            self.stdout.write(f"  password: {password}   (shown once)")
        self.stdout.write(f"  token:    {token}   (what /getdata/gettoken returns)")
