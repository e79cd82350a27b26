"""Check Kubernetes manifests against the official Python client's API models, offline.

``ApiClient`` deserialisation checks required fields and value types but ignores
unknown keys, so a misspelt field (``shareProcesNamespace``) would pass; the
walker here rejects every key the model does not declare, at any depth.
"""

from __future__ import annotations

import re
from typing import Any

from kubernetes import client

_LIST = re.compile(r"^(?:List|list)\[(.+)\]$")
_DICT = re.compile(r"^(?:Dict|dict)\[str, ?(.+)\]$|^dict\(str, ?(.+)\)$")
_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "datetime": (str,),
    "date": (str,),
    "bytearray": (str,),
    "object": (object,),
}


def model_for(doc: dict[str, Any]) -> str:
    """``apiVersion`` + ``kind`` → the client's model class name (``batch/v1`` Job → ``V1Job``)."""
    version = doc["apiVersion"].rsplit("/", 1)[-1]
    return version[0].upper() + version[1:] + doc["kind"]


def unknown_fields(value: Any, type_name: str, where: str = "") -> list[str]:
    """Every path in ``value`` that the model ``type_name`` does not declare (or types wrongly)."""
    m = _LIST.match(type_name)
    if m:
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [e for i, v in enumerate(value) for e in unknown_fields(v, m.group(1), f"{where}[{i}]")]
    m = _DICT.match(type_name)
    if m:
        if not isinstance(value, dict):
            return [f"{where}: expected a map"]
        inner = m.group(1) or m.group(2)
        return [e for k, v in value.items() for e in unknown_fields(v, inner, f"{where}.{k}")]
    if type_name in _SCALARS:
        if type_name == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return []  # YAML numbers where strings are expected are accepted by the API server
        if not isinstance(value, _SCALARS[type_name]) or (type_name == "int" and isinstance(value, bool)):
            return [f"{where}: expected {type_name}, got {type(value).__name__}"]
        return []
    cls = getattr(client, type_name, None)
    if cls is None:
        return [f"{where}: unknown model {type_name}"]
    if not isinstance(value, dict):
        return [f"{where}: expected a {type_name} map"]
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    errors = []
    for key, v in value.items():
        attr = by_json.get(key)
        if attr is None:
            errors.append(f"{where}.{key}: not a field of {type_name}")
            continue
        errors += unknown_fields(v, cls.openapi_types[attr], f"{where}.{key}")
    return errors


def validate(doc: dict[str, Any]) -> Any:
    """Raise AssertionError listing unknown fields; return the deserialised model (required fields checked)."""
    name = model_for(doc)
    errors = unknown_fields(doc, name, doc.get("kind", "?"))
    assert not errors, "\n".join(errors)
    return client.ApiClient()._ApiClient__deserialize(doc, name)
