"""The gateway's settings as they were before Argon2id: Django's PBKDF2 (1,000,000
iterations) first. Only bench/gettoken.py's baseline server uses it."""

from gateway.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
