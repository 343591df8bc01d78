"""The password hasher: Argon2id, tuned for a login to cost ~50-100 ms on a small server.

Django's own Argon2 hasher with different parameters. Memory-hard, so guessing with GPUs
costs memory as well as time, while a login costs the server far less than PBKDF2 at Django
5.2's 1,000,000 iterations did (0.2 s of CPU each; `gettoken` took up to a second when the
machine was busy, past the 2 s timeout of some clients). Hashes made
with other parameters (or by PBKDF2) still verify and are re-hashed with these at the next
successful login (settings.PASSWORD_HASHERS keeps the old hashers after this one).
"""

from __future__ import annotations

from django.contrib.auth.hashers import Argon2PasswordHasher


class GatewayArgon2PasswordHasher(Argon2PasswordHasher):
    # Measured with bench/gettoken.py on 2 cores: one verification takes 70-85 ms.
    # parallelism 1: on two shared cores more lanes only contend with other requests; one
    # lane keeps a login on one core. 32 MiB per login in progress (Django's default, 100
    # MiB with 8 lanes, took ~160 ms here and a lot of memory per web thread); 3 passes
    # over it bring the cost into the 50-100 ms band (stronger than OWASP's 19 MiB x 2).
    time_cost = 3
    memory_cost = 32 * 1024  # KiB
    parallelism = 1
