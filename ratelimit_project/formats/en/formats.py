"""How every page and admin list prints a date-time: "2026-12-06 14:05 UTC".

Django reads these before its own ``en`` formats (``FORMAT_MODULE_PATH``), so ``{{ value }}``
in a template, the ``when`` filter (``usage/templatetags/usage_format.py``) and the admin's
changelists agree. ``T`` is the abbreviation of the zone the value is shown in — the reader's
(``organizations.middleware``) — so a time is never ambiguous about which clock it is on.
Names this module does not define (input formats, month names) fall through to Django's.
"""

DATETIME_FORMAT = "Y-m-d H:i T"
DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
SHORT_DATE_FORMAT = "Y-m-d"
