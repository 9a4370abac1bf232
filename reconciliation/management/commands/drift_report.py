"""``manage.py drift_report``: which devices are not in sync, and why (SPEC sections 6 and 8). Read-only."""

import json
from datetime import datetime

from django.core.management.base import CommandError
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from devices.models import Device
from devices.selectors import device_list
from reconciliation.selectors import drift_explain
from sensorsync_project.commands import CHUNK_SIZE, OperatorCommand, device_pages

FORMATS = ("table", "json")


def _drift_record(device: Device) -> dict:
    explained = drift_explain(device=device)
    return {
        "name": device.name,
        "uuid": str(device.uuid),
        "isActive": device.is_active,
        "targetVersion": explained["targetVersion"],
        "reportedVersion": explained["reportedVersion"],
        "lastFetchedVersion": explained["lastFetchedVersion"],
        "lastSeenAt": explained["lastSeenAt"],
        "stage": explained["stage"],
        "reason": explained["reason"],
        "sensors": [
            {
                "name": sensor["name"],
                "status": sensor["deploymentStatus"],
                "running": sensor["running"],
                "error": sensor["deploymentError"],
                "attempts": sensor["deploymentAttempts"],
            }
            for sensor in explained["sensors"]
        ],
    }


def _when(value: datetime | None) -> str:
    return "never" if value is None else timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


def _table(headers: list[str], rows: list[list[str]], *, indent: str = "") -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    return [
        (indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))).rstrip()
        for row in (headers, *rows)
    ]


class Command(OperatorCommand):
    help = "List the devices that are not in sync with their target state, why, and which sensors drift."
    epilog = """\
A device is in sync when the agent reports the target version and every sensor row is deployed. For each
other device the report says how far it got (never fetched, not fetched, never reported, not applied, sensors
failed) and lists its sensors that are not deployed, with their status and error.

examples:
  manage.py drift_report
  manage.py drift_report --format json | jq '.[] | select(.stage == "sensors_failed") | .name'

exit status: 0 report printed (drift is not an error); 1 bad option; 2 usage error (from the shell)"""

    def add_arguments(self, parser):
        parser.add_argument(
            "--format",
            choices=FORMATS,
            default="table",
            help="table: aligned columns for people (default); json: a list of objects for scripts",
        )

    def handle(self, *args, **options):
        output_format = options["format"]
        if output_format not in FORMATS:
            raise CommandError(f"Unknown format '{output_format}'; use one of: {', '.join(FORMATS)}.")
        drifting = device_list().filter(target_state__needs_deployment=True)
        records = sorted(
            (_drift_record(device) for device in device_pages(drifting, CHUNK_SIZE)),
            key=lambda record: (record["name"], record["uuid"]),
        )
        if output_format == "json":
            self.stdout.write(json.dumps(records, cls=DjangoJSONEncoder, indent=2))
            return
        total = Device.objects.count()
        if not records:
            self.stdout.write(self.style.SUCCESS(f"All {total} device{'' if total == 1 else 's'} are in sync."))
            return
        self._write_table(records, total=total)

    def _write_table(self, records: list[dict], *, total: int) -> None:
        self.stdout.write(f"{len(records)} of {total} devices are not in sync.")
        self.stdout.write("")
        rows = [
            [
                record["name"] + ("" if record["isActive"] else " (inactive)"),
                record["uuid"],
                f"v{record['targetVersion']}",
                "never" if record["reportedVersion"] is None else f"v{record['reportedVersion']}",
                _when(record["lastSeenAt"]),
                record["stage"],
                str(len(record["sensors"])),
            ]
            for record in records
        ]
        headers = ["DEVICE", "UUID", "TARGET", "REPORTED", "LAST SEEN", "STAGE", "DRIFTING"]
        for line in _table(headers, rows):
            self.stdout.write(line)
        for record in records:
            self.stdout.write("")
            self.stdout.write(self.style.MIGRATE_HEADING(f"{record['name']} ({record['uuid']})"))
            self.stdout.write(f"  {record['reason']}")
            if not record["sensors"]:
                self.stdout.write("  No sensor is drifting.")
                continue
            sensor_rows = [
                [
                    sensor["name"],
                    sensor["status"],
                    "yes" if sensor["running"] else "no",
                    sensor["error"] or "-",
                ]
                for sensor in record["sensors"]
            ]
            for line in _table(["SENSOR", "STATUS", "RUNNING", "ERROR"], sensor_rows, indent="  "):
                self.stdout.write(line)
