"""Devices that register themselves: provisioning keys, registration and the key exchange (SPEC section 5).

The real agent makes its own uuid and API key, then calls ``POST /api/v1/device/register`` with a fleet-level
provisioning key; the device it registers is then like one staff created, except that its key was chosen by the
device (only its digest is stored) and it records the provisioning key that let it in.

Every registration holds the provisioning key's row lock, so two registrations under one key never pass its
limit, and two registrations of one uuid end with exactly one device.
"""

import contextlib
import uuid as uuid_lib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from events.choices import EventTypeChoices
from events.context import RequestUser, actor_label, signed_in_user
from events.services import EventRecorder, event_recording
from sensorsync_project.validation import has_control_characters

from .keys import key_digest, key_generate, key_weakness
from .labels import labels_validate
from .locking import device_events, device_write
from .models import Device, ProvisioningKey
from .services import DEVICE_NAME_MAX, device_labels_store_new, device_store

PROVISIONING_KEY_AGGREGATE = "provisioning_key"
NAME_MAX = 255


class RegistrationRefused(Exception):
    """A registration the server refuses; ``status`` and ``code`` become the JSON error answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class ProvisioningKeyWithSecret:
    key: ProvisioningKey
    secret: str  # shown once


@dataclass(frozen=True)
class Registration:
    device: Device
    created: bool  # False: a repeat of the same registration (same uuid, same key), answered as the first


def _key_events(key: ProvisioningKey) -> contextlib.AbstractContextManager[EventRecorder]:
    return event_recording(str(key.uuid), aggregate_type=PROVISIONING_KEY_AGGREGATE)


def _key_fields_validate(*, name: Any, expires_at: Any, max_devices: Any) -> None:
    errors: dict[str, list[str]] = {}
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX or has_control_characters(name):
        errors["name"] = [f"Must be a non-empty string of at most {NAME_MAX} characters, no control characters."]
    if expires_at is not None and (not isinstance(expires_at, datetime) or expires_at <= timezone.now()):
        errors["expiresAt"] = ["Must be a time in the future (or empty: never expires)."]
    if max_devices is not None and (type(max_devices) is not int or not 1 <= max_devices <= 10_000_000):
        errors["maxDevices"] = ["Must be a whole number from 1 to 10,000,000 (or empty: no limit)."]
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def provisioning_key_create(
    *,
    name: str,
    expires_at: datetime | None = None,
    max_devices: int | None = None,
    default_labels: dict[str, str] | None = None,
    user: RequestUser = None,
) -> ProvisioningKeyWithSecret:
    """A new provisioning key; its secret is returned once and stored only as a digest. Every device it registers
    starts with ``default_labels``."""
    _key_fields_validate(name=name, expires_at=expires_at, max_devices=max_devices)
    labels = dict(sorted(labels_validate(default_labels or {}, field="defaultLabels").items()))
    secret = key_generate()
    key = ProvisioningKey.objects.create(
        name=name.strip(),
        key_digest=key_digest(secret),
        key_prefix=secret[:6],
        expires_at=expires_at,
        max_devices=max_devices,
        default_labels=labels,
        created_by=signed_in_user(user),
    )
    with _key_events(key) as recorder:
        recorder.record(
            EventTypeChoices.PROVISIONING_KEY_CREATED,
            {
                "name": key.name,
                "expires_at": expires_at.isoformat() if expires_at else None,
                "max_devices": max_devices,
                "default_labels": labels,
            },
            actor=actor_label(user),
        )
    return ProvisioningKeyWithSecret(key=key, secret=secret)


@transaction.atomic
def provisioning_key_revoke(*, uuid: uuid_lib.UUID | str, user: RequestUser) -> ProvisioningKey:
    """Revoke a key: no device registers with it from now on. Devices it registered keep working."""
    key = ProvisioningKey.objects.select_for_update().get(uuid=uuid)
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.revoked_by = signed_in_user(user)
        key.save(update_fields=["revoked_at", "revoked_by"])
        with _key_events(key) as recorder:
            recorder.record(
                EventTypeChoices.PROVISIONING_KEY_REVOKED,
                {"registrations": key.registrations},
                actor=actor_label(user),
            )
    return key


@dataclass(frozen=True)
class RegistrationRequest:
    uuid: uuid_lib.UUID
    device_api_key: str
    device_name: str
    device_type: str
    application_id: str
    mac_address: str
    os_version: str
    agent_version: str


def _optional_text(data: dict, key: str, limit: int, errors: dict) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit or has_control_characters(value):
        errors[key] = [f"Must be a string of at most {limit} characters, no control characters."]
        return ""
    return value.strip()


def registration_parse(data: Any) -> RegistrationRequest:
    """The agent's registration body (``agent-wire/README.md``, "Provisioning"), validated; unknown fields ignored."""
    if not isinstance(data, dict):
        raise ValidationError({"body": ["Must be a JSON object."]})
    errors: dict[str, list[str]] = {}
    try:
        device_uuid = uuid_lib.UUID(data["uuid"]) if isinstance(data.get("uuid"), str) else None
    except ValueError:
        device_uuid = None
    if device_uuid is None:
        errors["uuid"] = ["Required: the device's uuid."]
    weakness = key_weakness(data.get("deviceApiKey"))
    if weakness:
        errors["deviceApiKey"] = [weakness]
    application_id = data.get("applicationId")
    if application_id is not None and not (
        (type(application_id) is int and 0 <= application_id <= 2**63 - 1)
        or (
            isinstance(application_id, str) and len(application_id) <= 64 and not has_control_characters(application_id)
        )
    ):
        errors["applicationId"] = ["Must be a whole number or a string of at most 64 characters."]
    device_name = _optional_text(data, "deviceName", DEVICE_NAME_MAX, errors)
    device_type = _optional_text(data, "deviceType", 64, errors)
    mac_address = _optional_text(data, "macAddress", 64, errors)
    os_version = _optional_text(data, "osVersion", 255, errors)
    agent_version = _optional_text(data, "agentVersion", 255, errors)
    if device_uuid is None or errors:
        raise ValidationError(errors)
    return RegistrationRequest(
        uuid=device_uuid,
        device_api_key=data["deviceApiKey"],  # a strong key: key_weakness found none
        device_name=device_name,
        device_type=device_type,
        application_id="" if application_id is None else str(application_id),
        mac_address=mac_address,
        os_version=os_version,
        agent_version=agent_version,
    )


def _same_registration(device: Device, request: RegistrationRequest) -> Registration:
    if device.api_key_digest != key_digest(request.device_api_key):
        raise RegistrationRefused(
            409,
            "device_exists",
            f"A device with uuid {request.uuid} is already registered with another key; nothing was changed.",
        )
    return Registration(device=device, created=False)


def provisioning_key_exists(*, secret: str) -> bool:
    """Whether ``secret`` is a provisioning key (in any state): a registration is authenticated before its body is
    read. ``device_register`` decides, under the key's lock, whether the key may register."""
    return ProvisioningKey.objects.filter(key_digest=key_digest(secret)).exists()


def device_register(*, provisioning_key: str, request: RegistrationRequest) -> Registration:
    """Register a device that chose its own uuid and key, with a provisioning key.

    A repeat of the same registration (same uuid, same device key) answers as the first did and writes nothing,
    even once the provisioning key expired or is exhausted (the agent retries a registration whose answer it
    lost); a revoked key registers nothing, not even a repeat. A uuid registered with another key is refused (409):
    no takeover."""
    now = timezone.now()
    with transaction.atomic():
        key = ProvisioningKey.objects.select_for_update().filter(key_digest=key_digest(provisioning_key)).first()
        if key is None:
            raise RegistrationRefused(401, "not_authenticated", "Unknown provisioning key.")
        refusal = key.refusal(now)
        if refusal is not None and key.revoked_at is not None:  # a revoked key registers nothing, not even a repeat
            raise RegistrationRefused(403, *refusal)
        existing = Device.objects.filter(uuid=request.uuid).first()
        if existing is not None:
            return _same_registration(existing, request)
        if refusal is not None:
            raise RegistrationRefused(403, *refusal)
        digest = key_digest(request.device_api_key)
        if Device.objects.filter(api_key_digest=digest).exists():
            raise RegistrationRefused(409, "device_key_in_use", "Another device already uses this deviceApiKey.")
        try:
            with transaction.atomic():  # a savepoint: another key may register this uuid at the same moment
                device = device_store(
                    name=request.device_name or f"device-{str(request.uuid)[:8]}",
                    api_key_digest=digest,
                    user=None,
                    uuid=request.uuid,
                    provisioned_by=key,
                    device_type=request.device_type,
                    mac_address=request.mac_address,
                    application_id=request.application_id,
                    os_version=request.os_version,
                    agent_version=request.agent_version,
                    actor=f"provisioning_key:{key.uuid}",
                )
                if key.default_labels:
                    device_labels_store_new(
                        device=device, labels=key.default_labels, actor=f"provisioning_key:{key.uuid}"
                    )
        except IntegrityError:
            existing = Device.objects.filter(uuid=request.uuid).first()
            if existing is None:
                raise
            return _same_registration(existing, request)
        ProvisioningKey.objects.filter(pk=key.pk).update(registrations=key.registrations + 1, last_used_at=now)
        with _key_events(key) as recorder:
            recorder.record(
                EventTypeChoices.PROVISIONING_KEY_USED,
                {"device": str(device.uuid), "name": device.name, "registrations": key.registrations + 1},
                actor=f"device:{device.uuid}",
            )
    return Registration(device=device, created=True)


def device_key_exchange(*, device: Device) -> None:
    """The agent proved it holds its key (the last step of provisioning): recorded once per device."""
    with device_write(uuid=device.uuid) as locked, device_events(locked) as recorder:
        recorder.record(EventTypeChoices.DEVICE_KEY_EXCHANGED, {}, actor=f"agent:{locked.uuid}")
