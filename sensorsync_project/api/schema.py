"""What the OpenAPI schema shares across apps: the ``If-Match`` parameter of every target write, and the agent
endpoints.

The agent endpoints are plain Django views (the fleet's hot paths, kept off DRF), which drf-spectacular cannot
introspect, so their contract is written here once and added to the generated schema by a postprocessing hook.
"""

from drf_spectacular.utils import OpenApiParameter

from sensors.choices import DeviceSensorDeploymentStatusChoices, DeviceSensorProtocolChoices

IF_MATCH = OpenApiParameter(
    "If-Match",
    location=OpenApiParameter.HEADER,
    required=False,
    description="The target state's ETag; the write is refused with 412 if the target changed since.",
)

ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


COMPONENTS = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "fields": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        },
    },
    "AgentSensor": {
        "type": "object",
        "required": ["name", "protocol"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {"type": "string", "minLength": 1, "maxLength": 255},
            "protocol": {"type": "string", "enum": DeviceSensorProtocolChoices.values},
            "enabled": {"type": "boolean"},
            "pollInterval": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
            "connection": {"type": "object"},
            "dataPoints": {"type": "array", "items": {"type": "object"}},
            "metadata": {"type": "object"},
        },
    },
    "AgentReportedSensor": {
        "type": "object",
        "description": (
            "A sensor the agent runs, in either agent generation's shape: `enabled` a boolean or 0/1, `connection` an "
            "object or `connectionString` holding one as JSON text; the agent's own `id` is ignored. A field left "
            "out is 'not reported': never a difference, and listed in the row's `unreportedFields`."
        ),
        "required": ["name", "protocol"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string", "minLength": 1, "maxLength": 255},
            "protocol": {"type": "string", "enum": DeviceSensorProtocolChoices.values},
            "enabled": {"oneOf": [{"type": "boolean"}, {"type": "integer", "enum": [0, 1]}]},
            "pollInterval": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
            "connection": {"type": "object"},
            "connectionString": {"type": "string", "description": "A JSON object as text (2025-11-22 agent)."},
            "dataPoints": {"type": "array", "items": {"type": "object"}},
            "metadata": {"type": "object"},
        },
    },
    "AgentTargetState": {
        "type": "object",
        "description": 'Keyed by the device uuid: {"<uuid>": {"apps": {}, "config": {"sensors": []}, "version": 43}}',
        "additionalProperties": {
            "type": "object",
            "required": ["apps", "config", "version"],
            "properties": {
                "apps": {"type": "object"},
                "config": {
                    "type": "object",
                    "properties": {"sensors": {"type": "array", "items": {"$ref": "#/components/schemas/AgentSensor"}}},
                },
                "version": {"type": "integer", "minimum": 1},
            },
        },
    },
    "AgentEndpointHealth": {
        "type": "object",
        "description": "One sensor's adapter health (2025-11-22 agent); other fields are accepted and not kept.",
        "properties": {
            "status": {"type": "string", "description": "online, offline or disabled (others: unknown)"},
            "connected": {"type": "boolean", "nullable": True},
            "communicationQuality": {"type": "string", "maxLength": 32, "nullable": True},
            "lastError": {"type": "string", "nullable": True},
            "lastSeen": {"type": "string", "format": "date-time", "nullable": True},
            "errorCount": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "nullable": True},
        },
    },
    "AgentAdapterStatus": {
        "type": "object",
        "description": "One sensor's adapter status (2025-11-06 agent).",
        "required": ["deviceName"],
        "properties": {
            "deviceName": {"type": "string", "minLength": 1, "maxLength": 255},
            "connected": {"type": "boolean", "nullable": True},
            "lastPoll": {"type": "string", "format": "date-time", "nullable": True},
            "errorCount": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "nullable": True},
            "lastError": {"type": "string", "nullable": True},
        },
    },
    "AgentReport": {
        "type": "object",
        "description": (
            "What the agent runs (SPEC section 5). `version` absent: a report from the agent's offline queue, "
            "acknowledged (outcome `queued`) and never applied. `config`, `apps` or a health map absent: as before. "
            "Unknown fields are ignored."
        ),
        "properties": {
            "version": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "nullable": True},
            "config": {
                "type": "object",
                "properties": {
                    "sensors": {"type": "array", "items": {"$ref": "#/components/schemas/AgentReportedSensor"}}
                },
            },
            "apps": {"type": "object"},
            # The agent's optional facts: null is read as "not sent".
            "os_version": {"type": "string", "maxLength": 255, "nullable": True},
            "agent_version": {"type": "string", "maxLength": 255, "nullable": True},
            "local_ip": {"type": "string", "description": "An IPv4 or IPv6 address.", "nullable": True},
            "uptime": {"type": "number", "minimum": 0, "maximum": 1e15, "nullable": True},
            "is_online": {"type": "boolean", "nullable": True},
            **{
                name: {"type": "number", "minimum": 0, "maximum": 1e15, "nullable": True}
                for name in ("cpu_usage", "memory_usage", "memory_total", "storage_usage", "storage_total")
            },
            "temperature": {"type": "number", "minimum": -273.15, "maximum": 1e15, "nullable": True},
            "top_processes": {"type": "array", "maxItems": 100, "items": {"type": "object"}, "nullable": True},
            "network_interfaces": {"type": "array", "maxItems": 64, "items": {"type": "object"}, "nullable": True},
            "seq": {
                "type": "integer",
                "minimum": 0,
                "description": "Increasing per report; older ones are stale.",
                "nullable": True,
            },
            "reported_at": {"type": "string", "format": "date-time", "nullable": True},
            "endpoints_health": {
                "type": "object",
                "additionalProperties": {"$ref": "#/components/schemas/AgentEndpointHealth"},
            },
            "protocol_adapters_health": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"$ref": "#/components/schemas/AgentAdapterStatus"}},
            },
            "sensor_health": {
                "type": "object",
                "description": (
                    "The seed note's {name: {healthy, lastError}}; the real agent sends sensor-publish statistics "
                    "here, keyed by pipe name: an entry without a boolean `healthy` says nothing of a sensor and "
                    "is ignored."
                ),
                "additionalProperties": {"type": "object"},
            },
        },
    },
    "AgentReportBody": {
        "type": "object",
        "description": "Keyed by the authenticated device's uuid.",
        "minProperties": 1,
        "additionalProperties": {"$ref": "#/components/schemas/AgentReport"},
    },
    "AgentVerdict": {
        "type": "object",
        "additionalProperties": {
            "type": "object",
            "required": ["outcome", "targetVersion", "reportedVersion", "appliedVersion", "inSync", "sensors"],
            "properties": {
                "outcome": {"type": "string", "enum": ["applied", "unchanged", "stale", "queued"]},
                "targetVersion": {"type": "integer"},
                "reportedVersion": {"type": "integer", "nullable": True},
                "appliedVersion": {"type": "integer", "nullable": True},
                "inSync": {"type": "boolean"},
                "reconciliation": {"type": "string"},
                "sensors": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {
                            "status": {"type": "string", "enum": DeviceSensorDeploymentStatusChoices.values},
                            "running": {"type": "boolean"},
                            "error": {"type": "string"},
                            "health": {
                                "type": "string",
                                "nullable": True,
                                "enum": ["online", "offline", "disabled", None],
                            },
                        },
                    },
                },
            },
        },
    },
    "AgentRegistration": {
        "type": "object",
        "description": "What the agent sends to register itself; unknown fields are ignored.",
        "required": ["uuid", "deviceApiKey"],
        "properties": {
            "uuid": {"type": "string", "format": "uuid"},
            "deviceApiKey": {
                "type": "string",
                "minLength": 32,
                "maxLength": 256,
                "description": "The device's own key (the agent sends 32 random bytes as 64 hex characters); at "
                "least 128 bits of entropy, not a repeating pattern. Only its digest is stored.",
            },
            "deviceName": {"type": "string", "maxLength": 255, "nullable": True},
            "deviceType": {"type": "string", "maxLength": 64, "nullable": True},
            "applicationId": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "maxLength": 64}]},
            "macAddress": {"type": "string", "maxLength": 64, "nullable": True},
            "osVersion": {"type": "string", "maxLength": 255, "nullable": True},
            "agentVersion": {"type": "string", "maxLength": 255, "nullable": True},
        },
    },
    "AgentRegistered": {
        "type": "object",
        "required": ["id", "uuid", "deviceName", "deviceType", "mqtt"],
        "properties": {
            "id": {"type": "integer"},
            "uuid": {"type": "string", "format": "uuid"},
            "deviceName": {"type": "string"},
            "deviceType": {"type": "string"},
            "mqtt": {
                "type": "object",
                "description": "Always present (the agent reads it); an empty broker keeps the agent on HTTP.",
                "required": ["username", "password", "broker", "topics"],
                "properties": {
                    "username": {"type": "string"},
                    "password": {"type": "string"},
                    "broker": {"type": "string"},
                    "topics": {
                        "type": "object",
                        "properties": {"publish": {"type": "string"}, "subscribe": {"type": "string"}},
                    },
                },
            },
        },
    },
    "AgentKeyExchange": {
        "type": "object",
        "properties": {"uuid": {"type": "string", "format": "uuid"}, "deviceApiKey": {"type": "string"}},
    },
}

SECURITY: list[dict[str, list[str]]] = [{"deviceKey": []}, {"deviceBearer": []}]  # OpenAPI: either header

PATHS = {
    "/api/v1/device/{uuid}/state": {
        "get": {
            "operationId": "agent_target_state_fetch",
            "summary": "The agent polls its target state",
            "tags": ["agent"],
            "security": SECURITY,
            "parameters": [
                {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}},
                {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {
                    "description": "The target state, with a strong ETag",
                    "headers": {"ETag": {"schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AgentTargetState"}}},
                },
                "304": {"description": "The agent already has this version"},
                "401": _error("Missing or unknown device key"),
                "403": _error("Another device's key, or an inactive device"),
                "404": _error("Not a device uuid"),
                "429": _error("Too many requests for this device"),
            },
        }
    },
    "/api/v1/device/state": {
        "patch": {
            "operationId": "agent_state_report",
            "summary": "The agent reports what actually runs",
            "tags": ["agent"],
            "security": SECURITY,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AgentReportBody"}}},
            },
            "responses": {
                "200": {
                    "description": "The server's verdict on the report",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AgentVerdict"}}},
                },
                "400": _error("Malformed or invalid report; nothing was written"),
                "401": _error("Missing or unknown device key"),
                "403": _error("The body names another device, or the device is inactive"),
                "413": _error("The body (decompressed) is larger than the limit"),
                "415": _error("Unsupported Content-Type or Content-Encoding"),
                "429": _error("Too many requests for this device"),
            },
        }
    },
    "/api/v1/device/register": {
        "post": {
            "operationId": "agent_register",
            "summary": "A device registers itself with a provisioning key",
            "tags": ["agent"],
            "security": [{"deviceBearer": []}],
            "description": "Authorization: Bearer <provisioning key>. A repeat of the same registration (same uuid "
            "and deviceApiKey) answers as the first did.",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AgentRegistration"}}},
            },
            "responses": {
                "201": {
                    "description": "Registered (or the same registration again)",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AgentRegistered"}}},
                },
                "400": _error("Invalid body (a weak deviceApiKey, a bad uuid); nothing was written"),
                "401": _error("Missing or unknown provisioning key"),
                "403": _error("The provisioning key is revoked, expired or exhausted"),
                "409": _error("The uuid is registered with another key, or the key is another device's"),
                "413": _error("The body is larger than the limit"),
                "415": _error("Unsupported Content-Type or Content-Encoding"),
                "429": _error("Too many registrations from this address"),
            },
        }
    },
    "/api/v1/device/{uuid}/key-exchange": {
        "post": {
            "operationId": "agent_key_exchange",
            "summary": "The agent proves it holds its own key (the last step of provisioning)",
            "tags": ["agent"],
            "security": SECURITY,
            "parameters": [
                {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
            ],
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AgentKeyExchange"}}},
            },
            "responses": {
                "200": {
                    "description": "The key is this device's",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "status": {"type": "string"},
                                    "uuid": {"type": "string"},
                                    "deviceName": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "400": _error("The body names another uuid or another key"),
                "401": _error("Missing or unknown device key"),
                "403": _error("Another device's key, or an inactive device"),
                "404": _error("Not a device uuid"),
                "413": _error("The body is larger than the limit"),
                "415": _error("Unsupported Content-Type or Content-Encoding"),
                "429": _error("Too many requests for this device"),
            },
        }
    },
}


def add_agent_endpoints(result, generator, request, public):
    result.setdefault("paths", {}).update(PATHS)
    components = result.setdefault("components", {})
    components.setdefault("schemas", {}).update(COMPONENTS)
    components.setdefault("securitySchemes", {}).update(
        {
            "deviceKey": {"type": "apiKey", "in": "header", "name": "X-Device-API-Key"},
            "deviceBearer": {"type": "http", "scheme": "bearer"},
        }
    )
    return result


def _documented_error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def add_error_responses(result, generator, request, public):
    """Every management operation documents the errors it can really answer, all in the one error shape
    (drf-spectacular only documents the success responses it can infer)."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = COMPONENTS["Error"]
    for path, operations in result.get("paths", {}).items():
        if path in PATHS:
            continue
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            for code, description in _operation_errors(path, method, operation).items():
                responses.setdefault(code, _documented_error(description))
    return result


def _operation_errors(path: str, method: str, operation: dict) -> dict[str, str]:
    """The errors a management operation can answer, by status, with what each means there."""
    parameters = operation.get("parameters", [])
    errors = {
        "401": "Not authenticated (session or Authorization: Token <token>)",
        "403": "Authenticated, but without the model permission this needs",
        "503": "The database is unavailable; nothing was written; retry",
    }
    if "{" in path:
        errors["404"] = "No such device (or sensor)"
    if method in ("post", "put", "patch") or any(p.get("in") == "query" for p in parameters):
        errors["400"] = "Invalid input, named in fields; nothing was written"
    if "requestBody" in operation:
        errors["413"] = "The body is larger than SENSORSYNC_MAX_BODY_BYTES"
        errors["415"] = "The body is not application/json"
    if any(p.get("in") == "header" and p.get("name") == "If-Match" for p in parameters):
        errors["412"] = "If-Match does not match the target state's ETag (which the response carries)"
    if method in ("post", "put", "patch", "delete"):
        errors["409"] = "A concurrent change conflicted with this one; retry"
    return errors
