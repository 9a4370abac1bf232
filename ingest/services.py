"""Device credentials on the MQTT broker: issued at registration, revoked when the device's key is rotated, the
device deactivated or deleted, and kept converged with the database.

The database decides; the broker follows. A device's broker client (username = its uuid, client id
``device_<uuid>``, a role of its own allowing only its topics) is legitimate while the device exists, is active and
has a ``DeviceMqttCredentials`` row issued under its current key. Every change is pushed to the broker after the
transaction that made it commits (``transaction.on_commit``); if the broker is unreachable then, the failure is
logged and counted, and the ingestion worker's convergence loop (``mqtt_access_converge``, every minute) applies
it later: a revocation is never lost.
"""

import logging
import secrets
import uuid as uuid_lib
from dataclasses import dataclass, field
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from devices.models import Device

from .broker import DEVICE_ROLE
from .dynsec import BrokerAddress, BrokerUnreachable, DynsecControl, DynsecError
from .metrics import ACCESS_CHANGES, CONVERGED
from .models import DeviceMqttCredentials

logger = logging.getLogger("sensorsync.mqtt")

ROLE_PREFIX = f"{DEVICE_ROLE}-"  # one role per device: Mosquitto 2.0's dynamic-security has no %u/%c patterns


def mqtt_enabled() -> bool:
    return bool(
        settings.SENSORSYNC_MQTT_BROKER_URL
        and settings.SENSORSYNC_MQTT_ADMIN_USERNAME
        and settings.SENSORSYNC_MQTT_ADMIN_PASSWORD
    )


def dynsec_control() -> DynsecControl:
    """The admin connection; BrokerUnreachable when ``SENSORSYNC_MQTT_URL`` is no broker URL (system check
    ingest.E001), as when the broker is down: callers log it and the device stays on HTTP."""
    try:
        return DynsecControl(
            settings.SENSORSYNC_MQTT_URL,
            username=settings.SENSORSYNC_MQTT_ADMIN_USERNAME,
            password=settings.SENSORSYNC_MQTT_ADMIN_PASSWORD,
            timeout=settings.SENSORSYNC_MQTT_TIMEOUT_SECONDS,
        )
    except ValueError as exc:
        raise BrokerUnreachable(f"SENSORSYNC_MQTT_URL: {exc}") from exc


def agent_broker_url() -> str:
    """``SENSORSYNC_MQTT_BROKER_URL`` as registration hands it to the agents (``BrokerAddress.url``); ValueError when
    it is no broker URL."""
    return BrokerAddress.parse(settings.SENSORSYNC_MQTT_BROKER_URL).url


def device_topics(device_uuid: uuid_lib.UUID | str) -> dict:
    base = f"iot/device/{device_uuid}"
    return {"publish": f"{base}/state", "subscribe": f"{base}/#"}


def device_role(device_uuid: uuid_lib.UUID | str) -> str:
    return f"{ROLE_PREFIX}{device_uuid}"


def _role_acls(device_uuid: uuid_lib.UUID | str) -> list[dict]:
    topics = device_topics(device_uuid)
    return [
        {"acltype": "publishClientSend", "topic": topics["publish"], "priority": 0, "allow": True},
        {"acltype": "subscribePattern", "topic": topics["subscribe"], "priority": 0, "allow": True},
        {"acltype": "unsubscribePattern", "topic": topics["subscribe"], "priority": 0, "allow": True},
        {"acltype": "publishClientReceive", "topic": topics["subscribe"], "priority": 0, "allow": True},
    ]


def mqtt_answer(device: Device, *, password: str | None) -> dict:
    """The ``mqtt`` object of a registration (or key-exchange) answer. Always present, because the agent reads it;
    an empty ``broker`` (MQTT off, or the broker could not take the credentials) keeps the agent on HTTP."""
    answer = {
        "username": str(device.uuid),
        "password": password or "",
        "broker": agent_broker_url() if password else "",
        "topics": device_topics(device.uuid),
    }
    # No "brokerConfig": it is optional for the agent, which reads the broker from "broker" alone.
    return answer


def _broker_client_set(control: DynsecControl, device_uuid: str, password: str) -> None:
    """Create the device's role and client, or give an existing client the new password and enable it."""
    role, username = device_role(device_uuid), str(device_uuid)
    created = control.run(
        [
            {"command": "createRole", "rolename": role, "acls": _role_acls(device_uuid)},
            {
                "command": "createClient",
                "username": username,
                "password": password,
                "clientid": f"device_{device_uuid}",
                "textname": "SensorSync device",
                "roles": [{"rolename": role, "priority": 0}],
            },
        ],
        raise_errors=False,
    )
    role_error, client_error = (answer.get("error") for answer in created)
    if role_error and "exist" not in role_error.lower():
        raise DynsecError("createRole", role_error)
    if client_error:
        if "exist" not in client_error.lower():
            raise DynsecError("createClient", client_error)
        control.run(
            [
                {"command": "setClientPassword", "username": username, "password": password},
                {"command": "addClientRole", "username": username, "rolename": role, "priority": 0},
                {"command": "enableClient", "username": username},
            ],
            raise_errors=False,
        )


def _broker_client_delete(control: DynsecControl, device_uuid: str) -> None:
    """Delete the device's client (the broker disconnects it at once) and its role; absent is fine."""
    answers = control.run(
        [
            {"command": "deleteClient", "username": str(device_uuid)},
            {"command": "deleteRole", "rolename": device_role(device_uuid)},
        ],
        raise_errors=False,
    )
    for command, answer in zip(("deleteClient", "deleteRole"), answers, strict=True):
        error = answer.get("error")
        if error and "not found" not in error.lower():
            raise DynsecError(command, error)


def _access_state(device_uuid: uuid_lib.UUID | str) -> str:
    """What the broker should hold for a device now: "valid", "inactive" or "revoked"."""
    row = (
        Device.objects.filter(uuid=device_uuid)
        .values("is_active", "api_key_digest", "mqtt_credentials__key_digest")
        .first()
    )
    if row is None or row["mqtt_credentials__key_digest"] != row["api_key_digest"]:
        return "revoked"
    return "valid" if row["is_active"] else "inactive"


def device_mqtt_credentials_issue(*, device: Device) -> str | None:
    """Issue the device a new random MQTT password (any earlier one stops working) and return it, or None when MQTT
    ingestion is off or the broker could not take it (logged and counted; the device stays on HTTP).

    Runs outside any transaction (after the registration committed): the database records the issue first, then
    the broker gets the client, then the database is read again, so a key rotation or deactivation that committed
    in between is not undone (and if this process dies in between, the convergence loop removes the client)."""
    if not mqtt_enabled():
        return None
    try:
        agent_broker_url()
    except ValueError as exc:  # also a system check (ingest.E001); a registration must not fail for it
        ACCESS_CHANGES.labels("issue", "failed").inc()
        logger.error("mqtt credentials not issued device=%s: SENSORSYNC_MQTT_BROKER_URL: %s", device.uuid, exc)
        return None
    password = secrets.token_urlsafe(32)
    DeviceMqttCredentials.objects.update_or_create(
        device=device, defaults={"key_digest": device.api_key_digest, "issued_at": timezone.now()}
    )
    try:
        with dynsec_control() as control:
            _broker_client_set(control, str(device.uuid), password)
            state = _access_state(device.uuid)
            if state != "valid":
                _broker_apply(control, str(device.uuid), state)
                ACCESS_CHANGES.labels("issue", "ok").inc()
                return None
    except (BrokerUnreachable, DynsecError) as exc:
        ACCESS_CHANGES.labels("issue", "failed").inc()
        logger.warning("mqtt credentials not issued device=%s: %s (the device reports over HTTP)", device.uuid, exc)
        return None
    ACCESS_CHANGES.labels("issue", "ok").inc()
    logger.info("mqtt credentials issued device=%s", device.uuid)
    return password


def device_mqtt_has_credentials(*, device: Device) -> bool:
    """Whether the device holds MQTT credentials issued under its current key."""
    return DeviceMqttCredentials.objects.filter(device=device, key_digest=device.api_key_digest).exists()


_ACTIONS = {"revoked": "revoke", "inactive": "disable", "valid": "enable"}


def _broker_apply(control: DynsecControl, device_uuid: str, state: str) -> None:
    if state == "revoked":
        _broker_client_delete(control, device_uuid)
    else:
        command = "disableClient" if state == "inactive" else "enableClient"
        error = control.run_one_quiet(command, username=device_uuid)
        if error and "not found" not in error.lower():
            raise DynsecError(command, error)


def device_mqtt_access_sync(*, uuid: uuid_lib.UUID | str, reason: str) -> None:
    """Bring the broker in line with the database for one device (after a key rotation, a deactivation or
    reactivation, a deletion): delete its client, disable or enable it. Never raises: a failure is logged and
    counted, and the convergence loop repeats it."""
    if not mqtt_enabled():
        return
    state = _access_state(uuid)
    action = _ACTIONS[state]
    try:
        with dynsec_control() as control:
            _broker_apply(control, str(uuid), state)
    except (BrokerUnreachable, DynsecError) as exc:
        ACCESS_CHANGES.labels(action, "failed").inc()
        logger.error(
            "mqtt %s failed device=%s reason=%s: %s (the ingestion worker's convergence loop will retry)",
            action,
            uuid,
            reason,
            exc,
        )
        return
    ACCESS_CHANGES.labels(action, "ok").inc()
    logger.info("mqtt %s device=%s reason=%s", action, uuid, reason)


def device_mqtt_access_changed(sender: object, *, uuid: uuid_lib.UUID | str, reason: str, **kwargs: object) -> None:
    """Receiver of ``devices.signals.device_access_changed``, sent inside the service that changed the device's key,
    activity or existence: syncs the broker once that transaction commits (not at all if it rolls back)."""
    if mqtt_enabled():
        transaction.on_commit(partial(device_mqtt_access_sync, uuid=uuid, reason=reason))


@dataclass
class Convergence:
    clients: int = 0
    deleted: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    enabled: list[str] = field(default_factory=list)


def _device_uuid(username: str) -> str | None:
    try:
        return str(uuid_lib.UUID(username))
    except ValueError:
        return None


def _broker_device_clients(control: DynsecControl) -> dict[str, bool]:
    """The broker's device clients: uuid -> disabled."""
    clients = {}
    for client in control.clients_verbose():
        device_uuid = _device_uuid(client.get("username", ""))
        if device_uuid is not None:
            clients[device_uuid] = bool(client.get("disabled", False))
    return clients


def _expected_access(uuids: list[str]) -> dict[str, str]:
    """What the database allows each of ``uuids``: valid, inactive, or revoked (also: gone, or never issued)."""
    expected: dict[str, str] = {}
    for start in range(0, len(uuids), 500):
        rows = Device.objects.filter(uuid__in=uuids[start : start + 500]).values_list(
            "uuid", "is_active", "api_key_digest", "mqtt_credentials__key_digest"
        )
        for device_uuid, active, digest, issued_under in rows:
            expected[str(device_uuid)] = "revoked" if issued_under != digest else ("valid" if active else "inactive")
    return expected


# (the database's verdict, whether the broker has the client disabled) -> what the convergence does about it
_CONVERGE_ACTIONS = {
    ("revoked", False): "deleted",
    ("revoked", True): "deleted",
    ("inactive", False): "disabled",
    ("valid", True): "enabled",
}


def mqtt_access_converge(*, control: DynsecControl | None = None) -> Convergence:
    """Make the broker's device clients match the database: delete the clients of devices that are gone, were
    re-keyed or never issued credentials, disable those of inactive devices, enable those of active ones.

    The broker is listed before the database is read: a client created after the listing is not seen, and one in
    the listing was created after its issue was committed, so a legitimate client is never deleted."""
    result = Convergence()
    own = control is None
    control = control or dynsec_control()
    if own:
        control.__enter__()
    try:
        clients = _broker_device_clients(control)
        result.clients = len(clients)
        expected = _expected_access(list(clients))
        for device_uuid, disabled in clients.items():
            state = expected.get(device_uuid, "revoked")
            if state != "valid" or disabled:
                # Read again just before acting: credentials issued since the batch read must not be withdrawn.
                state = _access_state(device_uuid)
            action = _CONVERGE_ACTIONS.get((state, disabled))
            if action is not None:
                _broker_apply(control, device_uuid, state)
                getattr(result, action).append(device_uuid)
                CONVERGED.labels(action).inc()
    finally:
        if own:
            control.__exit__(None, None, None)
    if result.deleted or result.disabled or result.enabled:
        logger.warning(
            "mqtt access converged: deleted=%d disabled=%d enabled=%d of %d device clients",
            len(result.deleted),
            len(result.disabled),
            len(result.enabled),
            result.clients,
        )
    return result
