"""The OpenAPI 3 description of the collector, served at GET /openapi.json."""

from __future__ import annotations

from typing import Any

from schemas.limits import DEFAULT_LIMITS, Limits

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json_error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


_FAILURES = {
    "400": _json_error("malformed JSON, an invalid event or one over a limit; `error` says what and where"),
    "413": _json_error("body or event above the size limit"),
    "503": _json_error("Kafka did not acknowledge; nothing was accepted, retry later"),
}

_CALL_DESCRIPTIONS = {
    "track": "a user action (`event` names it)",
    "identify": "who the person is: traits (email and phone are cleaned and flagged)",
    "page": "a web page view",
    "screen": "an app screen view",
    "alias": "links previousId to userId",
    "group": "associates the person with a group",
}


def _call_operation(call_type: str) -> dict[str, Any]:
    return {
        "summary": f"{call_type}: {_CALL_DESCRIPTIONS[call_type]} (Segment-compatible)",
        "operationId": call_type,
        "security": [{"writeKey": []}, {}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Call"}}},
        },
        "responses": {
            "200": {
                "description": "accepted and durable",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Success"}}},
            },
            "401": _json_error("missing or unknown write key"),
            **_FAILURES,
        },
    }


def _batch_operation(operation_id: str) -> dict[str, Any]:
    return {
        "summary": "several calls at once; each is accepted or rejected on its own",
        "operationId": operation_id,
        "security": [{"writeKey": []}, {}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Batch"}}},
        },
        "responses": {
            "200": {
                "description": "the valid calls are durable; invalid ones went to the dead-letter topic",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchResult"}}},
            },
            "401": _json_error("missing or unknown write key"),
            **_FAILURES,
        },
    }


def _webhook_operation(summary: str, content_type: str, signature: str, ok: dict[str, Any]) -> dict[str, Any]:
    form = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        "summary": summary,
        "parameters": [{"name": signature, "in": "header", "required": False, "schema": {"type": "string"}}],
        "requestBody": {
            "required": True,
            "content": {
                content_type: {
                    "schema": {"type": "array", "items": {"type": "object"}}
                    if content_type == "application/json"
                    else form
                }
            },
        },
        "responses": {
            "200": ok,
            "401": _json_error(
                "signature missing, wrong or too old, or no verification key configured for the provider"
            ),
            **_FAILURES,
        },
    }


def openapi_document(limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The collector's OpenAPI document: the Segment-compatible calls and the webhooks, within `limits`."""
    paths: dict[str, Any] = {f"/v1/{call}": {"post": _call_operation(call)} for call in _CALL_DESCRIPTIONS}
    paths["/v1/batch"] = {"post": _batch_operation("batch")}
    paths["/v1/import"] = {"post": _batch_operation("import")}
    webhook_ok = {
        "description": "the mapped events are durable",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchResult"}}},
    }
    paths["/webhooks/sendgrid"] = {
        "post": _webhook_operation(
            "SendGrid event webhook: delivered, open, click, bounce, spamreport, unsubscribe",
            "application/json",
            "X-Twilio-Email-Event-Webhook-Signature",
            webhook_ok,
        )
    }
    paths["/webhooks/twilio/status"] = {
        "post": _webhook_operation(
            "Twilio SMS status callback (delivered -> SMS Delivered)",
            "application/x-www-form-urlencoded",
            "X-Twilio-Signature",
            webhook_ok,
        )
    }
    paths["/webhooks/twilio/inbound"] = {
        "post": _webhook_operation(
            "Twilio inbound SMS: SMS Replied, and STOP/START as an sms_consent identify",
            "application/x-www-form-urlencoded",
            "X-Twilio-Signature",
            {"description": "empty TwiML response", "content": {"text/xml": {"schema": {"type": "string"}}}},
        )
    }
    paths["/openapi.json"] = {
        "get": {
            "summary": "this document",
            "responses": {"200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {}}}}},
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "nudgeflow collector",
            "version": "1",
            "description": "Segment/RudderStack-compatible tracking API and sender webhooks. Limits: "
            f"{limits.event_bytes} bytes per event, {limits.batch_bytes} bytes per request, nesting of "
            f"{limits.json_depth} levels, ids of {limits.id_length} characters, other strings of "
            f"{limits.string_length}, {limits.array_items} items per array, {limits.object_keys} keys per "
            "object; gzip bodies accepted.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "writeKey": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "the write key as user name, empty password (or writeKey in the body)",
                }
            },
            "schemas": {
                "Call": {
                    "type": "object",
                    "properties": {
                        "userId": {"type": "string", "minLength": 1},
                        "anonymousId": {"type": "string", "minLength": 1},
                        "event": {"type": "string"},
                        "name": {"type": "string"},
                        "previousId": {"type": "string"},
                        "messageId": {"type": "string"},
                        "timestamp": {"type": "string", "format": "date-time"},
                        "sentAt": {"type": "string", "format": "date-time"},
                        "properties": {"type": "object"},
                        "traits": {"type": "object"},
                        "context": {"type": "object"},
                        "writeKey": {"type": "string"},
                    },
                },
                "Batch": {
                    "type": "object",
                    "required": ["batch"],
                    "properties": {
                        "batch": {
                            "type": "array",
                            "items": {
                                "allOf": [
                                    {"$ref": "#/components/schemas/Call"},
                                    {
                                        "type": "object",
                                        "required": ["type"],
                                        "properties": {
                                            "type": {
                                                "type": "string",
                                                "enum": list(_CALL_DESCRIPTIONS),
                                            }
                                        },
                                    },
                                ]
                            },
                        },
                        "sentAt": {"type": "string", "format": "date-time"},
                        "context": {"type": "object"},
                        "writeKey": {"type": "string"},
                    },
                },
                "Success": {
                    "type": "object",
                    "required": ["success"],
                    "properties": {"success": {"type": "boolean"}, "duplicates": {"type": "integer"}},
                },
                "BatchResult": {
                    "type": "object",
                    "required": ["success"],
                    "properties": {
                        "success": {"type": "boolean"},
                        "accepted": {"type": "integer"},
                        "duplicates": {"type": "integer"},
                        "rejected": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"index": {"type": "integer"}, "reason": {"type": "string"}},
                            },
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["success", "error"],
                    "properties": {"success": {"type": "boolean", "enum": [False]}, "error": {"type": "string"}},
                },
            },
        },
    }
