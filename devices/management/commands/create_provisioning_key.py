"""``manage.py create_provisioning_key``: a fleet-level key with which devices register themselves (SPEC section 5,
"Provisioning"), shown once."""

import json
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from devices.provisioning import provisioning_key_create
from sensorsync_project.commands import OperatorCommand, user_or_none

KEY_NOTICE = (
    "Store this key now; it cannot be shown again. Give it to the agents as PROVISIONING_KEY (2025-11-22) or "
    "PROVISIONING_API_KEY (2025-11-06); revoke it in the admin or the API when the roll-out is done."
)


def _expiry(options: dict[str, Any]) -> datetime | None:
    if options["expires_at"]:
        parsed = parse_datetime(options["expires_at"])
        if parsed is None or parsed.tzinfo is None:
            raise CommandError("--expires-at must be an ISO 8601 time with a time zone, e.g. 2027-01-31T18:00:00Z.")
        return parsed
    if options["expires_in_days"] is not None:
        return timezone.now() + timedelta(days=options["expires_in_days"])
    return None


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals:
            raise CommandError(f"--label {pair!r} is not KEY=VALUE.")
        labels[key] = value
    return labels


class Command(OperatorCommand):
    help = "Create a provisioning key and print it (shown only this once)."
    epilog = """\
Devices that are given the key register themselves (POST /api/v1/device/register) with their own uuid and
API key. The key is stored only as a digest.

examples:
  manage.py create_provisioning_key "plant 3 roll-out" --expires-in-days 14 --max-devices 200
  manage.py create_provisioning_key "plant 3" --label plant=3 --label site=north
  manage.py create_provisioning_key lab --json

exit status: 0 created; 1 invalid input (nothing written); 2 usage error (from the shell)"""

    def add_arguments(self, parser):
        parser.add_argument("name", help="what the key is for (1 to 255 characters)")
        expiry = parser.add_mutually_exclusive_group()
        expiry.add_argument("--expires-in-days", type=float, metavar="DAYS", help="valid for this many days")
        expiry.add_argument("--expires-at", metavar="TIME", help="valid until this ISO 8601 time")
        parser.add_argument("--max-devices", type=int, metavar="N", help="register at most N devices")
        parser.add_argument(
            "--label",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a label every device it registers starts with (repeatable)",
        )
        parser.add_argument("--json", action="store_true", help='print {"uuid", "name", "key", ...} as JSON')
        parser.add_argument("--user", metavar="USERNAME", help="record this existing user as the author")

    def handle(self, *args, **options):
        user = user_or_none(options["user"])
        with self.audit_context():
            try:
                created = provisioning_key_create(
                    name=options["name"],
                    expires_at=_expiry(options),
                    max_devices=options["max_devices"],
                    default_labels=_labels(options["label"]),
                    user=user,
                )
            except ValidationError as exc:
                problems = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
                raise CommandError(f"Provisioning key not created. {problems}") from exc
        key = created.key
        expires = key.expires_at.isoformat() if key.expires_at else None
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "uuid": str(key.uuid),
                        "name": key.name,
                        "key": created.secret,
                        "expiresAt": expires,
                        "maxDevices": key.max_devices,
                        "defaultLabels": key.default_labels,
                    }
                )
            )
            self.stderr.write(KEY_NOTICE, style_func=self.style.WARNING)
            return
        self.stdout.write(self.style.SUCCESS(f"Created provisioning key '{key.name}'."))
        self.stdout.write(f"  key:         {created.secret}")
        self.stdout.write(f"  expires:     {expires or 'never'}")
        self.stdout.write(f"  max devices: {key.max_devices or 'no limit'}")
        labels = ", ".join(f"{k}={v}" for k, v in sorted(key.default_labels.items()))
        self.stdout.write(f"  labels:      {labels or 'none'}")
        self.stdout.write("")
        self.stdout.write(self.style.WARNING(KEY_NOTICE))
