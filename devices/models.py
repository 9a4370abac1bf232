import uuid
from datetime import datetime
from typing import Any, ClassVar

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from events.choices import EventSourceChoices
from sensorsync_project.fields import JSONField


def empty_config() -> dict:
    return {"sensors": []}


class DeviceAccessRevoked(Exception):
    """The key a request authenticated with stopped working while the request was in flight (rotated: 401;
    the device deactivated: 403). Nothing was written."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class ProvisioningKey(models.Model):
    """A fleet-level secret with which devices register themselves (``POST /api/v1/device/register``).

    Shown once at creation and stored as a digest, like device keys. It may expire, may be limited to a number of
    registrations, and may be revoked; ``registrations`` counts the devices it registered (kept under the key's
    row lock, so concurrent registrations cannot pass the limit), whatever became of them since."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=255)
    key_digest = models.CharField(max_length=64, unique=True, editable=False)
    key_prefix = models.CharField(
        max_length=8, editable=False, help_text="The key's first characters, to tell keys apart; never enough to use."
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    max_devices = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: no limit.")
    # Labels every device it registers starts with (devices.labels), {"key": "value"}; fixed at creation.
    default_labels = JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    registrations = models.PositiveIntegerField(default=0, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(max_devices__gte=1), name="provisioning_key_limit_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"

    def refusal(self, now: datetime) -> tuple[str, str] | None:
        """(code, sentence) if this key may not register a device now, else None."""
        if self.revoked_at is not None:
            return "provisioning_key_revoked", "This provisioning key was revoked."
        if self.expires_at is not None and self.expires_at <= now:
            return "provisioning_key_expired", f"This provisioning key expired at {self.expires_at.isoformat()}."
        if self.max_devices is not None and self.registrations >= self.max_devices:
            return (
                "provisioning_key_exhausted",
                f"This provisioning key has registered its {self.max_devices} device(s); it may register no more.",
            )
        return None


class Device(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    api_key_digest = models.CharField(max_length=64, unique=True, editable=False)
    # Reported by the agent; never indexed, because they are rewritten on every report.
    last_seen_at = models.DateTimeField(null=True, blank=True)
    os_version = models.CharField(max_length=255, blank=True)
    agent_version = models.CharField(max_length=255, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    uptime = models.FloatField(null=True, blank=True, help_text="Seconds, as the agent last reported.")
    # The agent's latest metrics (CPU, memory, storage, temperature, processes, network interfaces), validated and
    # replaced whole by each report that carries them; not part of a report's identity (see agent_protocol).
    facts = JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder, editable=False)
    facts_reported_at = models.DateTimeField(null=True, blank=True, editable=False)
    # What the agent fetched, so "never fetched", "fetched but not applied" and "applied" can be told apart.
    last_fetched_version = models.PositiveIntegerField(null=True, blank=True)
    last_fetched_at = models.DateTimeField(null=True, blank=True)
    # Set when the device registered itself with a provisioning key (SPEC section 5, "Provisioning").
    provisioned_by = models.ForeignKey(
        ProvisioningKey, null=True, blank=True, on_delete=models.PROTECT, related_name="devices", editable=False
    )
    device_type = models.CharField(max_length=64, blank=True)
    mac_address = models.CharField(max_length=64, blank=True)
    application_id = models.CharField(max_length=64, blank=True)
    # The newest report clocks seen, each in its own unit (a report older than either is stale): the agent's
    # ``seq``, and its ``reported_at`` in microseconds since the epoch. Keyed by clock in REPORT_MARKS.
    last_report_seq = models.BigIntegerField(null=True, blank=True, editable=False)
    last_report_clock_us = models.BigIntegerField(null=True, blank=True, editable=False)
    # MQTT ingestion (ingest/): when the server received the newest report that came over MQTT, in microseconds
    # since the epoch. Set only by the ingestion workers, which stamp each message on receipt: a message received
    # earlier never overwrites one received later by another worker.
    last_report_received_us = models.BigIntegerField(null=True, blank=True, editable=False)
    # Bumped by every unit of work that writes the device, its states or its sensors (devices.locking): a report
    # that finds it one higher after taking the lock knows the states it read before are still current.
    revision = models.PositiveBigIntegerField(default=0, editable=False)
    # Staff edits of the desired state collect in a draft (DeviceTargetDraft) the agent does not see until it is
    # deployed; see reconciliation.services.drafts.
    draft_mode = models.BooleanField(
        default=False,
        help_text="Staff edits of its sensors collect as a draft, which the agent gets only when it is deployed.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    # A report's clock (``seq``, ``reported_at``) -> the field holding the newest one seen.
    REPORT_MARKS: ClassVar[dict[str, str]] = {
        "seq": "last_report_seq",
        "reported_at": "last_report_clock_us",
        "received_at": "last_report_received_us",  # MQTT only: see last_report_received_us
    }

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["name", "id"], name="device_name_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.uuid})"

    def current_state_or_none(self) -> "DeviceCurrentState | None":
        """The last accepted report, or None for a device that never reported."""
        try:
            return self.current_state
        except DeviceCurrentState.DoesNotExist:
            return None

    def target_draft_or_none(self) -> "DeviceTargetDraft | None":
        """The undeployed draft, or None (one query, then cached on the instance, a missing draft too)."""
        try:
            return self.target_draft
        except DeviceTargetDraft.DoesNotExist:
            return None


class DeviceLabel(models.Model):
    """A ``key=value`` label on a device, one value per key; the rules for keys and values and the selectors over
    them are in ``devices.labels``. Written only by the label services (``devices.services``)."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="labels")
    key = models.CharField(max_length=317)  # a prefix of up to 253 characters, '/', a name of up to 63
    value = models.CharField(max_length=63, blank=True)

    class Meta:
        ordering = ["device_id", "key"]
        constraints = [models.UniqueConstraint(fields=["device", "key"], name="device_label_key_unique")]
        # A selector's requirement (``plant=3``) is an EXISTS over this index; with the device last, the planner
        # finds the matching devices in the index alone (an index-only scan).
        indexes = [models.Index(fields=["key", "value", "device"], name="device_label_key_value_idx")]

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


class DeviceTargetState(models.Model):
    """The desired state: what the agent should run. Every change bumps ``version``."""

    device = models.OneToOneField(Device, on_delete=models.CASCADE, primary_key=True, related_name="target_state")
    config = JSONField(default=empty_config, encoder=DjangoJSONEncoder)
    apps = JSONField(default=dict, encoder=DjangoJSONEncoder)
    version = models.PositiveIntegerField(default=1)
    needs_deployment = models.BooleanField(default=True)
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_deployed_at = models.DateTimeField(null=True, blank=True)
    # Each sensor row's {status, running, error}, kept by reconciliation: the verdict an unchanged report gets
    # without reading the rows.
    sensor_statuses = JSONField(default=dict, encoder=DjangoJSONEncoder, editable=False)
    # The open drift episode while the device drifts: {"episode": id, "sensors": {name: {"protocol",
    # "first_status"}}}, else {}. Kept here because every drift transition rewrites this row anyway.
    drift = JSONField(default=dict, encoder=DjangoJSONEncoder, editable=False)
    # The last version the device fully deployed (in sync at it): what an exhausted retry budget falls back to.
    deployed_version = models.PositiveIntegerField(null=True, blank=True, editable=False)
    # The retry budget (``reconciliation.services.retry_budget``): failed applies of one target version, counted by
    # reconciliation when a report brings a new failed result for the version it runs, reset by convergence and by
    # a new version. Once it reaches SENSORSYNC_RETRY_BUDGET the device is not retried at that version until staff
    # act (a new version or a reset), and, with SENSORSYNC_RETRY_BUDGET_FALLBACK, falls back to
    # ``deployed_version``'s content as a new version (``retry_fallback_version``).
    failed_applies = models.PositiveIntegerField(default=0, editable=False)
    failed_applies_version = models.PositiveIntegerField(null=True, blank=True, editable=False)
    retry_exhausted_at = models.DateTimeField(null=True, blank=True, editable=False)
    retry_exhausted_version = models.PositiveIntegerField(null=True, blank=True, editable=False)
    retry_fallback_version = models.PositiveIntegerField(null=True, blank=True, editable=False)

    # What a new target version from staff starts afresh (``devices.services.target_state_store``) and a reset clears.
    RETRY_BUDGET_CLEARED: ClassVar[dict[str, Any]] = {
        "failed_applies": 0,
        "failed_applies_version": None,
        "retry_exhausted_at": None,
        "retry_exhausted_version": None,
        "retry_fallback_version": None,
    }

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(version__gte=1), name="target_version_positive")]

    def __str__(self) -> str:
        return f"target state of {self.device_id} v{self.version}"

    @property
    def etag(self) -> str:
        # Versions are never reused and every change bumps the version, so the version alone is a strong validator.
        return f'"{self.version}"'

    @property
    def retry_exhausted(self) -> bool:
        """The retry budget ran out at the version the device is asked to run: it is not retried at it."""
        return self.retry_exhausted_at is not None and self.retry_exhausted_version == self.version


class DeviceTargetDraft(models.Model):
    """Staff edits of a device in draft mode, not yet published: the whole desired state they make, on top of the
    published ``base_version``. The agent's poll never reads this table; deploying it writes a new target version
    through the normal path, discarding it deletes it."""

    device = models.OneToOneField(Device, on_delete=models.CASCADE, primary_key=True, related_name="target_draft")
    config = JSONField(encoder=DjangoJSONEncoder)
    apps = JSONField(encoder=DjangoJSONEncoder)
    base_version = models.PositiveIntegerField(help_text="The published target version the draft was started on.")
    # What deploying it would change against the published target: {"added", "updated", "removed", "apps"}.
    change = JSONField(default=dict, encoder=DjangoJSONEncoder)
    # Bumped by every save: the draft's ETag, so that two people editing one draft do not overwrite each other.
    revision = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"draft of {self.device_id} on v{self.base_version}"

    @property
    def etag(self) -> str:
        return f'"{self.base_version}-draft-{self.revision}"'


class DeviceTargetStateVersion(models.Model):
    """History: every target version that ever existed, who set it, and what changed."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="target_versions")
    version = models.PositiveIntegerField()
    config = JSONField(encoder=DjangoJSONEncoder)
    apps = JSONField(encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=16, choices=EventSourceChoices.choices)
    change = JSONField(default=dict, encoder=DjangoJSONEncoder)

    class Meta:
        ordering = ["device", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["device", "version"], name="target_version_unique"),
            models.CheckConstraint(condition=models.Q(version__gte=1), name="target_history_version_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.device_id} v{self.version}"


class DeviceCurrentState(models.Model):
    """The last accepted report: what the agent says it runs."""

    device = models.OneToOneField(Device, on_delete=models.CASCADE, primary_key=True, related_name="current_state")
    config = JSONField(default=empty_config, encoder=DjangoJSONEncoder)
    apps = JSONField(default=dict, encoder=DjangoJSONEncoder)
    version = models.PositiveIntegerField(help_text="The target version the agent says it applied.")
    seq = models.BigIntegerField(null=True, blank=True, help_text="The agent's report sequence, when it sends one.")
    # Per-sensor health, normalized, by the map it came from: {"endpoints_health": {name: {...}}, ...}.
    sensor_health = JSONField(default=dict, encoder=DjangoJSONEncoder)
    reported_at = models.DateTimeField(default=timezone.now)
    digest = models.CharField(max_length=64, help_text="Digest of the report's identity, for no-op detection.")
    # The digest of each part of the identity as last reported (config, apps, each health map), so that a report
    # that leaves a part out ("as before") is compared without reading the stored part.
    parts = JSONField(default=dict, encoder=DjangoJSONEncoder, editable=False)

    def __str__(self) -> str:
        return f"current state of {self.device_id} v{self.version}"
