"""Create a pairing code for an account: ``manage.py pairdevice you@example.com``."""

from __future__ import annotations

import io
from typing import Any

import segno
from django.core.management.base import BaseCommand, CommandError, CommandParser

from devices import services
from gateway.models import User


class Command(BaseCommand):
    help = "Create a single-use pairing code (15 minutes) for the account of a login."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email", help="a login of the account the device will belong to")
        parser.add_argument(
            "--server",
            default="http://127.0.0.1:8000",
            help="the address phones reach this server at",
        )
        parser.add_argument("--qr", action="store_true", help="also print the QR code")

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(email=options["email"].strip().lower()).first()
        if user is None:
            raise CommandError(f"No login with the email {options['email']}")
        pairing, code = services.create_pairing_code(user.account)
        how = services.pairing_instructions(pairing, code, options["server"])
        self.stdout.write(f"Pairing code: {how.code}  (valid until {how.expires_at:%H:%M:%S} UTC)")
        self.stdout.write(f"On the phone (Termux): {how.command}")
        self.stdout.write(f"App link: {how.uri}")
        if options["qr"]:
            drawing = io.StringIO()
            segno.make(how.uri, error="m").terminal(out=drawing, compact=True)
            self.stdout.write(drawing.getvalue())
