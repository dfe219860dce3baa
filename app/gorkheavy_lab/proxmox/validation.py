"""Parameter and response verification following the rules of Proxmox's JSON schema dialect.

The schema dialect is the one of the API viewer data: every property has a ``type``, may be ``optional``
(``1``), and may carry ``enum``, ``pattern`` (matched against the whole value), ``minimum``/``maximum``,
``maxLength``/``minLength``, ``requires`` and a ``format``. A format is either a name (``pve-vmid``,
``ipv4``, ``pve-configid-list`` ...) or a dictionary describing a *property string*
(``key=value,key=value`` with one optional ``default_key`` that may be written without ``key=``).

Values arrive as strings (form data and query strings) exactly like on the real server, so type checks
work on the textual representation: booleans are only ``0``/``1``, integers ``[+-]?\\d+``.

Error texts are the ones the real server puts into the per-parameter ``errors`` object.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import struct
from collections.abc import Callable, Mapping
from typing import Any

from gorkheavy_lab.proxmox.state import ALL_PRIVILEGES

# ---------------------------------------------------------------------------------------------------------
# helpers


class FormatError(Exception):
    """A value does not satisfy a named or property-string format (message without trailing newline)."""


_NUMBER_RE = re.compile(r"^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$")
_INTEGER_RE = re.compile(r"^[+-]?\d+$")
_INDEXED_RE = re.compile(r"^(.*)\[n\]$")

# Highest index (inclusive) of the ``name[n]`` properties of the qemu/lxc/cluster schemas.
INDEX_LIMITS: dict[str, int] = {
    "net": 31,
    "ipconfig": 31,
    "scsi": 30,
    "virtio": 15,
    "sata": 5,
    "ide": 3,
    "serial": 3,
    "parallel": 2,
    "usb": 13,
    "hostpci": 15,
    "unused": 255,
    "numa": 7,
    "virtiofs": 9,
    "mp": 255,
    "dev": 255,
    "link": 7,
    "acmedomain": 4,
}


def is_number(value: str) -> bool:
    return bool(_NUMBER_RE.match(value))


def is_integer(value: str) -> bool:
    return bool(_INTEGER_RE.match(value))


def perl_regex(pattern: str) -> re.Pattern[str]:
    """Translate the Perl regex syntax found in the schema (``(?^:...)``, ``(?^i:...)``) to Python."""
    translated = pattern.replace("(?^:", "(?:")
    translated = re.sub(r"\(\?\^([a-z]+):", r"(?\1:", translated)
    translated = translated.replace("\\z", "\\Z")
    return re.compile(translated)


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def full_match(pattern: str, value: str) -> bool:
    """Proxmox anchors schema patterns: ``m/^$pattern$/``."""
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        compiled = perl_regex(f"^(?:{pattern})$")
        _REGEX_CACHE[pattern] = compiled
    # Perl's ``$`` also matches before a final newline; keep that quirk.
    return bool(compiled.match(value)) or (value.endswith("\n") and bool(compiled.match(value[:-1])))


def schema_number(value: Any) -> float | int:
    """Limits in the schema are sometimes strings (``"minimum": "0"``)."""
    if isinstance(value, int | float):
        return value
    text = str(value)
    return int(text) if is_integer(text) else float(text)


def format_limit(value: Any) -> str:
    number = schema_number(value)
    if isinstance(number, float) and number.is_integer():
        return str(int(number))
    return str(number)


def property_key_schema(properties: Mapping[str, Any], key: str) -> tuple[str, Mapping[str, Any]] | None:
    """Find the schema of ``key``: either a literal property or an indexed one such as ``net[n]``."""
    if key in properties:
        return key, properties[key]
    match = re.match(r"^([a-z]+)(\d+)$", key)
    if not match:
        return None
    base, index = match.group(1), int(match.group(2))
    schema = properties.get(f"{base}[n]")
    if schema is None:
        return None
    if str(index) != match.group(2):  # "net01" is not "net1"
        return None
    if index > INDEX_LIMITS.get(base, 255):
        return None
    return f"{base}[n]", schema


# ---------------------------------------------------------------------------------------------------------
# named formats


def _id_check(value: str, kind: str) -> None:
    if len(value) < 2:
        raise FormatError(f"{kind} ID '{value}' cannot be shorter than 2 characters")
    if not re.match(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$", value, re.IGNORECASE):
        raise FormatError(f"{kind} ID '{value}' contains illegal characters")


def _vmid(value: str) -> None:
    if not re.match(r"^[1-9][0-9]{2,8}$", value):
        raise FormatError("value does not look like a valid VM ID")


def _node(value: str) -> None:
    if not re.match(r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$", value):
        raise FormatError("value does not look like a valid node name")


def _configid(value: str) -> None:
    if not re.match(r"^[a-z][a-z0-9_-]+$", value, re.IGNORECASE):
        raise FormatError(f"invalid configuration ID '{value}'")


def _urlencoded(value: str) -> None:
    if not re.match(r"^[-%a-zA-Z0-9_.!~*'()]*$", value):
        raise FormatError(f"invalid urlencoded string: {value}")


def _ipv4(value: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise FormatError("value does not look like a valid IPv4 address") from None


def _ipv6(value: str) -> None:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        raise FormatError("value does not look like a valid IPv6 address") from None


def _ip(value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise FormatError("value does not look like a valid IP address") from None


def _cidrv4(value: str) -> None:
    match = re.match(r"^([^/]+)/(\d+)$", value)
    ok = False
    if match:
        try:
            ipaddress.IPv4Address(match.group(1))
            ok = 0 < int(match.group(2)) <= 32
        except ValueError:
            ok = False
    if not ok:
        raise FormatError("value does not look like a valid IPv4 CIDR network")


def _cidrv6(value: str) -> None:
    match = re.match(r"^([^/]+)/(\d+)$", value)
    ok = False
    if match:
        try:
            ipaddress.IPv6Address(match.group(1))
            ok = 7 < int(match.group(2)) <= 128
        except ValueError:
            ok = False
    if not ok:
        raise FormatError("value does not look like a valid IPv6 CIDR network")


def _cidr(value: str) -> None:
    try:
        _cidrv4(value)
        return
    except FormatError:
        pass
    try:
        _cidrv6(value)
    except FormatError:
        raise FormatError("value does not look like a valid CIDR network") from None


def _ip_or_cidr(value: str) -> None:
    try:
        _ip(value)
    except FormatError:
        try:
            _cidr(value)
        except FormatError:
            raise FormatError("value does not look like a valid IP address or CIDR network") from None


def _ipv4_config(value: str) -> None:
    if value in ("dhcp", "manual"):
        return
    try:
        _cidrv4(value)
    except FormatError:
        raise FormatError("value does not look like a valid ipv4 network configuration") from None


def _ipv6_config(value: str) -> None:
    if value in ("dhcp", "auto", "manual"):
        return
    try:
        _cidrv6(value)
    except FormatError:
        raise FormatError("value does not look like a valid ipv6 network configuration") from None


_DNS_LABEL = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)"


def _dns_name(value: str) -> None:
    if not re.match(rf"^(?:{_DNS_LABEL}\.)*{_DNS_LABEL}$", value):
        raise FormatError("value does not look like a valid DNS name")


def _email(value: str) -> None:
    if not re.match(r"^[\w+\-~]+(\.[\w+\-~]+)*@[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)*$", value):
        raise FormatError("value does not look like a valid email address")


def _mac(value: str) -> None:
    if not re.match(r"^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$", value, re.IGNORECASE):
        raise FormatError("value does not look like a valid unicast MAC address")


def _tag(value: str) -> None:
    if not re.match(r"^[a-z0-9_][a-z0-9_\-+.]*$", value, re.IGNORECASE):
        raise FormatError("invalid characters in tag")


def _bridge(value: str) -> None:
    if not re.match(r"^[-_.\w\d]+$", value):
        raise FormatError(f"invalid bridge ID '{value}'")


def parse_volume_id(volid: str) -> tuple[str, str]:
    match = re.match(r"^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$", volid, re.IGNORECASE | re.DOTALL)
    if not match:
        raise FormatError(f"unable to parse volume ID '{volid}'")
    return match.group(1), match.group(2)


def _volume_id(value: str) -> None:
    parse_volume_id(value)


def _volume_or_absolute_path(value: str) -> None:
    if value.startswith("/"):
        return
    parse_volume_id(value)


def _volume_or_qm_path(value: str) -> None:
    if value in ("none", "cdrom"):
        return
    _volume_or_absolute_path(value)


SIZE_RE = re.compile(r"^(\d+(\.\d+)?)([KMGT](?:iB)?)?$")


def parse_size(value: str) -> int | None:
    match = SIZE_RE.match(value)
    if not match:
        return None
    number = float(match.group(1))
    unit = (match.group(3) or "")[:1]
    factor = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[unit]
    return int(number * factor)


def format_size(size: int) -> str:
    """Render a byte count the way Proxmox writes ``size=`` into drive strings."""
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size % (1 << shift) == 0 and size >= (1 << shift):
            return f"{size >> shift}{unit}"
    return str(size)


def _disk_size(value: str) -> None:
    if parse_size(value) is None:
        raise FormatError(f"value does not look like a valid disk size: {value}")


STORAGE_CONTENT_TYPES = ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import", "none")


def _storage_content(value: str) -> None:
    if value not in STORAGE_CONTENT_TYPES:
        raise FormatError(f"invalid content type '{value}'")


def _userid(value: str) -> None:
    if not re.match(r"^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+$", value) or len(value) > 64:
        raise FormatError(f"value '{value}' does not look like a valid user name")


def _realm(value: str) -> None:
    if not re.match(r"^[A-Za-z][A-Za-z0-9.\-_]+$", value):
        raise FormatError(f"value '{value}' does not look like a valid realm")


def _poolid(value: str) -> None:
    if not re.match(r"^[A-Za-z0-9_\-/]+$", value):
        raise FormatError(f"invalid pool ID '{value}'")


def _startup_order(value: str) -> None:
    for part in value.split(","):
        if not re.match(r"^(order=\d+|up=\d+|down=\d+|\d+)$", part):
            raise FormatError("unable to parse startup options")


def _iface(value: str) -> None:
    if not re.match(r"^[a-zA-Z][a-zA-Z0-9_.\-]{1,19}$", value) and not re.match(r"^[a-z0-9]{2,20}$", value):
        raise FormatError(f"invalid network interface name '{value}'")


def _storage_pair(value: str) -> None:
    for part in re.split(r"[\s,;]+", value):
        if not part:
            continue
        if part == "1":
            continue
        pieces = part.split(":")
        for piece in pieces:
            try:
                _id_check(piece, "storage")
            except FormatError as exc:
                raise FormatError(f"entry '{part}' contains invalid ID - {exc}") from None


def _task_status(value: str) -> None:
    if value not in ("ok", "error", "warning", "unknown"):
        raise FormatError(f"invalid status '{value}'")


_IPV4_MASKS = {str(ipaddress.IPv4Network(f"0.0.0.0/{bits}").netmask) for bits in range(33)}


def _ipv4mask(value: str) -> None:
    if value not in _IPV4_MASKS:
        raise FormatError("value does not look like a valid IP netmask")


def _hotplug(value: str) -> None:
    if value in ("0", "1"):
        return
    for feature in split_list(value):
        if feature not in ("network", "disk", "cpu", "memory", "usb", "cloudinit"):
            raise FormatError("unable to parse hotplug option")


def _privilege(value: str) -> None:
    if value not in ALL_PRIVILEGES and not re.match(
        r"^(Permissions|Realm|Group|User|Mapping|SDN|Pool)\.", value
    ):
        raise FormatError(f"invalid privilege '{value}'")


NAMED_FORMATS: dict[str, Callable[[str], None]] = {
    "pve-vmid": _vmid,
    "pve-node": _node,
    "pve-configid": _configid,
    "pve-storage-id": lambda v: _id_check(v, "storage"),
    "pve-bridge-id": _bridge,
    "pve-sdn-vnet-id": lambda v: _id_check(v, "vnet"),
    "urlencoded": _urlencoded,
    "ipv4": _ipv4,
    "ipv6": _ipv6,
    "ip": _ip,
    "address": _ip,
    "CIDR": _cidr,
    "CIDRv4": _cidrv4,
    "CIDRv6": _cidrv6,
    "IPorCIDR": _ip_or_cidr,
    "pve-ipv4-config": _ipv4_config,
    "pve-ipv6-config": _ipv6_config,
    "dns-name": _dns_name,
    "email": _email,
    "mac-addr": _mac,
    "pve-tag": _tag,
    "pve-volume-id": _volume_id,
    "pve-volume-id-or-absolute-path": _volume_or_absolute_path,
    "pve-volume-id-or-qm-path": _volume_or_qm_path,
    "disk-size": _disk_size,
    "pve-storage-content": _storage_content,
    "pve-userid": _userid,
    "pve-realm": _realm,
    "pve-poolid": _poolid,
    "pve-startup-order": _startup_order,
    "pve-iface": _iface,
    "storage-pair": _storage_pair,
    "pve-task-status-type": _task_status,
    "ipv4mask": _ipv4mask,
    "pve-hotplug-features": _hotplug,
    "pve-priv": _privilege,
    "string": lambda v: None,
}

# Lists the schema names explicitly (``<name>-list``) whose element format differs from the name.
_LIST_ALIASES = {"pve-tag-list": "pve-tag", "storage-pair-list": "storage-pair"}


def split_list(value: str) -> list[str]:
    """Proxmox splits ``-list`` formats on whitespace, commas, semicolons and NUL."""
    return [part for part in re.split(r"[\s,;\0]+", value) if part]


# Named property-string formats that the viewer data refers to only by name. Their keys follow qemu-server.
_IPCONFIG_FORMAT: dict[str, Any] = {
    "ip": {"type": "string", "format": "pve-ipv4-config", "optional": 1},
    "gw": {"type": "string", "format": "ipv4", "optional": 1, "requires": "ip"},
    "ip6": {"type": "string", "format": "pve-ipv6-config", "optional": 1},
    "gw6": {"type": "string", "format": "ipv6", "optional": 1, "requires": "ip6"},
}
_CICUSTOM_FORMAT: dict[str, Any] = {
    key: {"type": "string", "format": "pve-volume-id", "optional": 1}
    for key in ("meta", "network", "user", "vendor")
}
_BOOT_FORMAT: dict[str, Any] = {
    "legacy": {"type": "string", "pattern": "[acdn]{1,4}", "optional": 1, "default_key": 1},
    "order": {
        "type": "string",
        "pattern": r"(?:ide|sata|scsi|virtio|efidisk|tpmstate|net|usb|hostpci)\d+"
        r"(?:;(?:ide|sata|scsi|virtio|efidisk|tpmstate|net|usb|hostpci)\d+)*",
        "optional": 1,
    },
}
_CPU_FORMAT: dict[str, Any] = {
    "cputype": {"type": "string", "optional": 1, "default_key": 1, "pattern": r"[a-zA-Z0-9_.\-]+"},
    "flags": {"type": "string", "optional": 1, "pattern": r"[+-][a-zA-Z0-9_\-.]+(?:;[+-][a-zA-Z0-9_\-.]+)*"},
    "hidden": {"type": "boolean", "optional": 1},
    "hv-vendor-id": {"type": "string", "optional": 1, "pattern": r"[a-zA-Z0-9]{1,12}"},
    "phys-bits": {"type": "string", "optional": 1, "pattern": r"(?:[1-9]\d?|host)"},
    "guest-phys-bits": {"type": "integer", "optional": 1, "minimum": 32, "maximum": 64},
    "reported-model": {"type": "string", "optional": 1},
}

_UUID = r"[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}"
_BASE64 = r"[A-Za-z0-9+/]+={0,2}"
_SMBIOS1_FORMAT: dict[str, Any] = {
    "uuid": {"type": "string", "pattern": _UUID, "optional": 1, "maxLength": 36},
    "version": {"type": "string", "pattern": _BASE64, "optional": 1, "maxLength": 512},
    "serial": {"type": "string", "pattern": _BASE64, "optional": 1, "maxLength": 512},
    "manufacturer": {"type": "string", "pattern": _BASE64, "optional": 1, "maxLength": 512},
    "product": {"type": "string", "pattern": _BASE64, "optional": 1, "maxLength": 512},
    "sku": {"type": "string", "pattern": _BASE64, "optional": 1, "maxLength": 512},
    "family": {"type": "string", "pattern": _BASE64, "optional": 1, "maxLength": 512},
    "base64": {"type": "boolean", "optional": 1},
}
_WATCHDOG_FORMAT: dict[str, Any] = {
    "model": {"type": "string", "enum": ["i6300esb", "ib700"], "optional": 1, "default_key": 1},
    "action": {
        "type": "string",
        "enum": ["reset", "shutdown", "poweroff", "pause", "debug", "none"],
        "optional": 1,
    },
}
_RNG_FORMAT: dict[str, Any] = {
    "source": {"type": "string", "enum": ["/dev/urandom", "/dev/random", "/dev/hwrng"], "default_key": 1},
    "max_bytes": {"type": "integer", "optional": 1},
    "period": {"type": "integer", "optional": 1},
}

NAMED_PROPERTY_FORMATS: dict[str, dict[str, Any]] = {
    "pve-qm-smbios1": _SMBIOS1_FORMAT,
    "pve-qm-watchdog": _WATCHDOG_FORMAT,
    "pve-qm-rng": _RNG_FORMAT,
    "pve-qm-ipconfig": _IPCONFIG_FORMAT,
    "pve-qm-cicustom": _CICUSTOM_FORMAT,
    "pve-qm-boot": _BOOT_FORMAT,
    "pve-vm-cpu-conf": _CPU_FORMAT,
}

# Named formats the stand-in does not verify (firewall specs, SDN ids ...): they are accepted as the
# strings they are. Kept explicit so that adding a format used by the provision role is a conscious step.
UNVERIFIED_FORMATS: set[str] = set()


def register_drive_format(name: str, fmt: Mapping[str, Any]) -> None:
    """``pve-qm-ide`` (the ``cdrom`` option) shares the drive property string of ``ide[n]``."""
    NAMED_PROPERTY_FORMATS[name] = dict(fmt)


# ---------------------------------------------------------------------------------------------------------
# property strings


def parse_property_string(fmt: Mapping[str, Any], data: str) -> dict[str, str]:
    """Split ``data`` into keys following ``fmt``; aliases resolved (``virtio=MAC`` -> model/macaddr)."""
    result: dict[str, str] = {}
    default_key: str | None = None
    for part in data.split(","):
        if re.match(r"^\s*$", part):
            continue
        match = re.match(r"^([^=]+)=(.+)$", part, re.DOTALL)
        if match:
            key, value = match.group(1), match.group(2)
            if key in result:
                raise FormatError(f"duplicate key in comma-separated list property: {key}")
            schema = fmt.get(key)
            if schema is not None and schema.get("alias"):
                key_alias = schema.get("keyAlias")
                if key_alias:
                    if key_alias in result:
                        raise FormatError(f"key alias '{key_alias}' is already defined")
                    result[key_alias] = key
                key = schema["alias"]
                schema = fmt.get(key)
                if key in result:
                    raise FormatError(f"key '{key}' is already defined (via alias)")
            if schema is None:
                raise FormatError(f"invalid key in comma-separated list property: {key}")
            if schema.get("type") == "boolean":
                value = _parse_boolean_word(value)
            result[key] = value
        elif "=" not in part:
            if default_key is not None:
                raise FormatError(f"duplicate key in comma-separated list property: {default_key}")
            for key, schema in fmt.items():
                if schema.get("default_key"):
                    default_key = key
                    if key in result:
                        raise FormatError(f"duplicate key in comma-separated list property: {key}")
                    value = part
                    if schema.get("type") == "boolean":
                        value = _parse_boolean_word(value)
                    result[key] = value
                    break
            if default_key is None:
                raise FormatError("value without key, but schema does not define a default key")
        else:
            raise FormatError("missing key in comma-separated list property")
    return result


def _parse_boolean_word(value: str) -> str:
    lowered = value.lower()
    if lowered in ("1", "on", "yes", "true"):
        return "1"
    if lowered in ("0", "off", "no", "false"):
        return "0"
    return value


def print_property_string(
    fmt: Mapping[str, Any], values: Mapping[str, str], order: list[str] | None = None
) -> str:
    """Render a parsed property string back, default key first and without ``key=``."""
    parts: list[str] = []
    default_key = next((k for k, s in fmt.items() if s.get("default_key")), None)
    keys = order or sorted(values)
    if default_key and default_key in values:
        parts.append(values[default_key])
    for key in keys:
        if key == default_key or key not in values:
            continue
        parts.append(f"{key}={values[key]}")
    return ",".join(parts)


def check_format(fmt: Any, value: str, path: str) -> None:
    """Raise ``FormatError`` with the text that follows ``invalid format - `` in Proxmox's message."""
    if isinstance(fmt, dict):
        _check_property_string(fmt, value, path)
        return
    if fmt == "regex":
        try:
            re.compile(value)
        except re.error as exc:
            raise FormatError(str(exc)) from None
        return
    name = str(fmt)
    if name in NAMED_PROPERTY_FORMATS:
        _check_property_string(NAMED_PROPERTY_FORMATS[name], value, path)
        return
    if name in _LIST_ALIASES:
        element = NAMED_FORMATS[_LIST_ALIASES[name]]
        for item in split_list(value):
            element(item)
        return
    match = re.match(r"^(.*?)(?:-(list|opt))?$", name)
    assert match is not None
    base, kind = match.group(1), match.group(2)
    checker = NAMED_FORMATS.get(base) or NAMED_FORMATS.get(name)
    if checker is None:
        UNVERIFIED_FORMATS.add(name)
        return
    if kind == "list" and base in NAMED_FORMATS:
        for item in split_list(value):
            checker(item)
    elif kind == "opt" and base in NAMED_FORMATS:
        if value:
            checker(value)
    else:
        checker(value)


def _check_property_string(fmt: Mapping[str, Any], value: str, path: str) -> None:
    parsed = parse_property_string(fmt, value)
    errors: dict[str, str] = {}
    check_object(path, fmt, parsed, additional_properties=False, errors=errors, values_are_text=True)
    if errors:
        text = "format error\n" + "".join(f"{key}: {message}\n" for key, message in errors.items())
        raise FormatError(text)


# ---------------------------------------------------------------------------------------------------------
# the checker


def add_error(errors: dict[str, str], path: str, message: str) -> None:
    key = path or "_root"
    if key in errors:
        errors[key] = errors[key] + "\\n" + message
    else:
        errors[key] = message


def _check_type(path: str, type_: str | None, value: Any, errors: dict[str, str], text: bool) -> bool:
    if not type_ or type_ == "any":
        return True
    if value is None:
        if type_ == "null":
            return True
        add_error(errors, path, f"type check ('{type_}') failed")
        return False
    if type_ == "null":
        add_error(errors, path, f"type check ('{type_}') failed - value is not null")
        return False
    if type_ == "array":
        if not isinstance(value, list):
            add_error(errors, path, f"type check ('{type_}') failed")
            return False
        return True
    if type_ == "object":
        if not isinstance(value, dict):
            add_error(errors, path, f"type check ('{type_}') failed")
            return False
        return True
    if isinstance(value, list | dict):
        kind = "ARRAY" if isinstance(value, list) else "HASH"
        add_error(errors, path, f"type check ('{type_}') failed - got {kind}")
        return False
    if text:
        # form data and query strings: everything is a string, checked by its text
        if isinstance(value, bool) and type_ != "boolean":
            add_error(errors, path, f"type check ('{type_}') failed - got JSON::PP::Boolean")
            return False
        shown = _text(value)
        if type_ == "boolean":
            if isinstance(value, bool) or shown in ("0", "1"):
                return True
        elif type_ == "integer":
            if not isinstance(value, bool) and is_integer(shown):
                return True
        elif type_ == "number":
            if not isinstance(value, bool) and is_number(shown):
                return True
        else:
            return True
        add_error(errors, path, f"type check ('{type_}') failed - got '{shown}'")
        return False
    # responses: native JSON types, checked strictly
    ok = True
    if type_ == "boolean":
        ok = isinstance(value, bool) or (isinstance(value, int) and value in (0, 1))
    elif type_ == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif type_ == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif type_ == "string":
        ok = isinstance(value, str)
    if not ok:
        add_error(errors, path, f"type check ('{type_}') failed - got {value!r} ({type(value).__name__})")
    return ok


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def check_prop(value: Any, schema: Mapping[str, Any], path: str, errors: dict[str, str], text: bool) -> None:
    if schema.get("alias"):
        return
    if value is None:
        if schema.get("type") == "null":
            return
        if not schema.get("optional"):
            add_error(errors, path, "property is missing and it is not optional")
        return
    type_ = schema.get("type")
    if isinstance(type_, list):
        trial: dict[str, str] = {}
        if not any(_check_type(path, t, value, {}, text) for t in type_):
            add_error(trial, path, f"type check ('{'|'.join(type_)}') failed")
            errors.update(trial)
            return
    elif not _check_type(path, type_, value, errors, text):
        return
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for index, element in enumerate(value):
                check_prop(element, items, f"{path}[{index}]", errors, text)
        return
    if isinstance(value, dict):
        if schema.get("properties") is not None or schema.get("additionalProperties") is not None:
            check_object(
                path,
                schema.get("properties") or {},
                value,
                additional_properties=schema.get("additionalProperties"),
                errors=errors,
                values_are_text=text,
            )
        return
    shown = _text(value)
    fmt = schema.get("format")
    if fmt:
        try:
            check_format(fmt, shown, path)
        except FormatError as exc:
            message = str(exc)
            add_error(errors, path, f"invalid format - {message}" + ("" if message.endswith("\n") else "\n"))
            return
    pattern = schema.get("pattern")
    if pattern and not full_match(pattern, shown):
        add_error(errors, path, "value does not match the regex pattern")
        return
    max_length = schema.get("maxLength")
    if max_length is not None and len(shown) > int(max_length):
        add_error(errors, path, f"value may only be {max_length} characters long")
        return
    min_length = schema.get("minLength")
    if min_length is not None and len(shown) < int(min_length):
        add_error(errors, path, f"value must be at least {min_length} characters long")
        return
    if not isinstance(value, bool) and is_number(shown):
        number = float(shown)
        if schema.get("maximum") is not None and number > schema_number(schema["maximum"]):
            add_error(errors, path, f"value must have a maximum value of {format_limit(schema['maximum'])}")
            return
        if schema.get("minimum") is not None and number < schema_number(schema["minimum"]):
            add_error(errors, path, f"value must have a minimum value of {format_limit(schema['minimum'])}")
            return
    enum = schema.get("enum")
    if enum and shown not in [str(e) for e in enum]:
        add_error(
            errors,
            path,
            f"value '{shown}' does not have a value in the enumeration '{', '.join(map(str, enum))}'",
        )


def check_object(
    path: str,
    properties: Mapping[str, Any],
    value: Mapping[str, Any],
    *,
    additional_properties: Any,
    errors: dict[str, str],
    values_are_text: bool,
) -> None:
    """Check ``value`` against ``properties``; ``name[n]`` properties accept ``name0`` ... ``nameN``."""

    def sub(key: str) -> str:
        return f"{path}.{key}" if path else key

    for name, schema in properties.items():
        if _INDEXED_RE.match(name):
            continue
        check_prop(value.get(name), schema, sub(name), errors, values_are_text)
    for key, item in value.items():
        found = property_key_schema(properties, key)
        if found is not None:
            name, schema = found
            if name != key:
                check_prop(item, schema, sub(key), errors, values_are_text)
            requires = schema.get("requires")
            if isinstance(requires, str) and value.get(requires) is None:
                add_error(errors, sub(requires), f"missing property required by '{sub(key)}'")
            continue
        if additional_properties is not None and not additional_properties and additional_properties != {}:
            add_error(
                errors,
                sub(key),
                "property is not defined in schema and the schema does not allow additional properties",
            )
        elif isinstance(additional_properties, dict) and additional_properties:
            check_prop(item, additional_properties, sub(key), errors, values_are_text)


def verify_parameters(parameters: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, str]:
    """Verify request parameters (all from one request) against a method's ``parameters`` schema."""
    errors: dict[str, str] = {}
    check_object(
        "",
        parameters.get("properties") or {},
        values,
        additional_properties=parameters.get("additionalProperties", 1),
        errors=errors,
        values_are_text=True,
    )
    return errors


def verify_returns(returns: Mapping[str, Any] | None, data: Any) -> dict[str, str]:
    """Verify a response's ``data`` against the method's ``returns`` schema (native JSON types)."""
    errors: dict[str, str] = {}
    if not returns:
        return errors
    schema = dict(returns)
    if schema.get("type") is None and data is None:
        return errors
    # the server returns null data for many "returns: {type: null}" methods, and optional is implied
    schema.setdefault("optional", 1)
    if data is None and schema.get("type") != "null" and not schema.get("optional"):
        add_error(errors, "", "property is missing and it is not optional")
        return errors
    # Perl has no separate number and string scalars: the real server's own response check accepts
    # "100" where the schema says integer, so the textual check applies here too.
    check_prop(data, schema, "", errors, text=True)
    return errors


# ---------------------------------------------------------------------------------------------------------
# SSH keys (what ``ssh-keygen -l`` accepts, line by line)

SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


def valid_ssh_public_key(line: str) -> bool:
    """A line ``[options] type base64 [comment]`` whose blob starts with the length-prefixed type."""
    fields = line.split()
    for index, field in enumerate(fields):
        if field in SSH_KEY_TYPES and index + 1 < len(fields):
            try:
                blob = base64.b64decode(fields[index + 1], validate=True)
            except ValueError:
                return False
            if len(blob) < 4:
                return False
            (length,) = struct.unpack(">I", blob[:4])
            return blob[4 : 4 + length] == field.encode()
    return False


def validate_ssh_public_keys(raw: str) -> None:
    for line in raw.split("\n"):
        if re.match(r"^\s*$", line):
            continue
        if not valid_ssh_public_key(line):
            raise ValueError("SSH public key validation error")
