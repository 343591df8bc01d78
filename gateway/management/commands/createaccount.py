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
        "Create an account with one login (an operator with admin rights unless --no-admin). "
        "Prints the password (generated unless given) and the account's API token."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("--password", help="Default: a generated one, printed once.")
        parser.add_argument("--name", help="Account name. Default: the email address.")
        parser.add_argument("--time-zone", default=None, help="IANA zone, e.g. Europe/Berlin.")
        parser.add_argument(
            "--no-admin", action="store_true", help="A login without admin-site access."
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
        admin = not options["no_admin"]
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
                email, password, account=account, is_staff=admin, is_superuser=admin
            )
        token = compat_token(account)
        self.stdout.write(f"Account {account.name!r} created.")
        self.stdout.write(f"  login:    {email}")
        if not options["password"]:
            self.stdout.write(f"  password: {password}   (shown once)")
        self.stdout.write(f"  token:    {token}   (what /getdata/gettoken returns)")
