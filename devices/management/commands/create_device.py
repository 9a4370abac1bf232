"""``manage.py create_device``: register a device and show its agent API key, once (SPEC sections 4 and 8)."""

import json

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from devices.services import device_create
from sensorsync_project.commands import OperatorCommand, user_or_none

KEY_NOTICE = "Store this key now; it cannot be shown again. (A lost key can only be replaced: rotate it.)"


class Command(OperatorCommand):
    help = "Register a new device and print its uuid and its agent API key (shown only this once)."
    epilog = """\
The key is stored only as a digest: copy it into the agent's configuration now.

examples:
  manage.py create_device press-line-7 --description "Press line 7, hall B"
  manage.py create_device spare-gateway --inactive --json

exit status: 0 created; 1 invalid input (nothing written); 2 usage error (from the shell)"""

    def add_arguments(self, parser):
        parser.add_argument("name", help="the device's display name (1 to 255 characters)")
        parser.add_argument("--description", default="", help="free text shown to staff")
        parser.add_argument(
            "--inactive", action="store_true", help="create it deactivated: its key is refused until activated"
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help='print {"uuid", "name", "apiKey"} as JSON on stdout (the notice goes to stderr)',
        )
        parser.add_argument(
            "--user", metavar="USERNAME", help="record this existing user as the author (default: no user)"
        )

    def handle(self, *args, **options):
        user = user_or_none(options["user"])
        # The service records a user as a foreign key; without --user the events name the command as the actor.
        with self.audit_context():
            try:
                created = device_create(
                    name=options["name"],
                    description=options["description"],
                    is_active=not options["inactive"],
                    user=user,
                )
            except ValidationError as exc:
                problems = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
                raise CommandError(f"Device not created. {problems}") from exc

        device = created.device
        if options["json"]:
            self.stdout.write(json.dumps({"uuid": str(device.uuid), "name": device.name, "apiKey": created.api_key}))
            self.stderr.write(KEY_NOTICE, style_func=self.style.WARNING)
            return
        state = "active" if device.is_active else "inactive: its key is refused until the device is activated"
        self.stdout.write(self.style.SUCCESS(f"Created device '{device.name}' ({state})."))
        self.stdout.write(f"  uuid:    {device.uuid}")
        self.stdout.write(f"  API key: {created.api_key}")
        self.stdout.write("")
        self.stdout.write(self.style.WARNING(KEY_NOTICE))
