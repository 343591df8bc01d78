"""How the admin writes dates and times (every list and page): to the second, with the
zone, in a form that sorts (2026-12-03 09:04:11 UTC); the APIs have their own formats."""

DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
TIME_FORMAT = "H:i:s"
