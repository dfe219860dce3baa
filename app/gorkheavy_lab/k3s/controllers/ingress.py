"""Ingresses (networking.k8s.io/v1) and IngressClasses as a K3s server serves them: K3s's Traefik chart makes
the IngressClass ``traefik`` (controller ``traefik.io/ingress-controller``, the default class), so an Ingress
without ``ingressClassName`` gets ``traefik`` (the DefaultIngressClass admission plugin).

Beyond the schema (strict, as every type), the apiserver's semantic validation of an Ingress is applied:
every path needs a ``pathType`` (``Exact``, ``Prefix``, ``ImplementationSpecific``), ``Exact``/``Prefix``
paths must be absolute, a host must be a DNS-1123 subdomain (a leading ``*.`` allowed) and no IP address, a
service backend needs a name and exactly one of ``port.name`` and ``port.number`` (1-65535), a backend is a
service or a resource but not both, an Ingress needs a default backend or at least one rule, and
``ingressClassName`` is a DNS-1123 subdomain. Errors are 422 Invalid with the apiserver's field paths.

Not modelled: Traefik itself (nothing routes the Ingress; its ``status.loadBalancer`` stays empty, as on a
cluster whose ingress controller has not seen it yet)."""

from __future__ import annotations

import ipaddress
import re

from ..kube.errors import invalid
from ..kube.registry import Column, Obj, Registry, ResourceType
from ..kube.store import Store
from ..kube.tables import AGE, NAME

DEFAULT_CLASS = "ingressclass.kubernetes.io/is-default-class"
NOT_SUBDOMAIN = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character"
)
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
TRAEFIK: Obj = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "IngressClass",
    "metadata": {
        "name": "traefik",
        "annotations": {DEFAULT_CLASS: "true"},
        "labels": {
            "app.kubernetes.io/instance": "traefik-kube-system",
            "app.kubernetes.io/managed-by": "Helm",
            "app.kubernetes.io/name": "traefik",
        },
    },
    "spec": {"controller": "traefik.io/ingress-controller"},
}


def _backend_errors(backend: Obj, path: str) -> list[tuple[str, str]]:
    errors = []
    service, resource = backend.get("service"), backend.get("resource")
    if service and resource:
        errors.append((path, 'Invalid value: "": cannot set both resource and service backends'))
    if not service and not resource:
        errors.append((path, 'Invalid value: "": resource or service backend is required'))
    if service:
        if not service.get("name"):
            errors.append((f"{path}.service.name", "Required value"))
        port = service.get("port") or {}
        has_name, has_number = bool(port.get("name")), port.get("number") is not None
        if has_name and has_number:
            errors.append(
                (f"{path}.service.port", 'Invalid value: "": cannot set both port name & port number')
            )
        elif not has_name and not has_number:
            errors.append((f"{path}.service.port.name", "Required value: port name or number is required"))
        elif has_name and not PORT_NAME.match(str(port["name"])):
            errors.append(
                (f"{path}.service.port.name", f'Invalid value: "{port["name"]}": must be a valid port name')
            )
        elif has_number and not 0 < int(port["number"]) < 65536:
            errors.append(
                (
                    f"{path}.service.port.number",
                    f"Invalid value: {port['number']}: must be between 1 and 65535, inclusive",
                )
            )
    return errors


def validate(obj: Obj) -> None:
    spec = obj.get("spec") or {}
    errors: list[tuple[str, str]] = []
    rules = spec.get("rules") or []
    if not rules and not spec.get("defaultBackend"):
        errors.append(("spec", 'Invalid value: "": either `defaultBackend` or `rules` must be specified'))
    if spec.get("defaultBackend"):
        errors += _backend_errors(spec["defaultBackend"], "spec.defaultBackend")
    name = spec.get("ingressClassName")
    if name is not None and not SUBDOMAIN.match(name):
        errors.append(
            (
                "spec.ingressClassName",
                f'Invalid value: "{name}": {NOT_SUBDOMAIN}',
            )
        )
    for i, rule in enumerate(rules):
        host = rule.get("host")
        if host:
            bare = host[2:] if host.startswith("*.") else host
            try:
                ipaddress.ip_address(host)
                errors.append(
                    (
                        f"spec.rules[{i}].host",
                        f'Invalid value: "{host}": must be a DNS name, not an IP address',
                    )
                )
            except ValueError:
                if not SUBDOMAIN.match(bare):
                    errors.append(
                        (
                            f"spec.rules[{i}].host",
                            f'Invalid value: "{host}": {NOT_SUBDOMAIN}',
                        )
                    )
        paths = (rule.get("http") or {}).get("paths") if rule.get("http") is not None else None
        if rule.get("http") is not None and not paths:
            errors.append((f"spec.rules[{i}].http.paths", "Required value"))
        for j, entry in enumerate(paths or []):
            where = f"spec.rules[{i}].http.paths[{j}]"
            kind = entry.get("pathType")
            if not kind:
                errors.append((f"{where}.pathType", "Required value: pathType must be specified"))
            elif kind not in {"Exact", "Prefix", "ImplementationSpecific"}:
                errors.append(
                    (
                        f"{where}.pathType",
                        f'Unsupported value: "{kind}": supported values: '
                        '"Exact", "ImplementationSpecific", "Prefix"',
                    )
                )
            elif kind in {"Exact", "Prefix"} and not str(entry.get("path", "")).startswith("/"):
                errors.append(
                    (f"{where}.path", f'Invalid value: "{entry.get("path", "")}": must be an absolute path')
                )
            errors += _backend_errors(entry.get("backend") or {}, f"{where}.backend")
    for i, tls in enumerate(spec.get("tls") or []):
        for k, host in enumerate(tls.get("hosts") or []):
            bare = host[2:] if host.startswith("*.") else host
            if not SUBDOMAIN.match(bare):
                errors.append(
                    (
                        f"spec.tls[{i}].hosts[{k}]",
                        f"Invalid value: \"{host}\": a wildcard DNS-1123 subdomain must start with '*.'",
                    )
                )
    if errors:
        raise invalid("Ingress", obj["metadata"]["name"], errors, "networking.k8s.io")


def _default_class(obj: Obj, store: Store) -> None:
    spec = obj.setdefault("spec", {})
    if spec.get("ingressClassName") is None and not (obj["metadata"].get("annotations") or {}).get(
        "kubernetes.io/ingress.class"
    ):
        for ic in store.list(INGRESSCLASSES):
            if (ic["metadata"].get("annotations") or {}).get(DEFAULT_CLASS) == "true":
                spec["ingressClassName"] = ic["metadata"]["name"]
                break


def _ingress_create(obj: Obj, store: Store) -> None:
    _default_class(obj, store)
    validate(obj)
    obj["status"] = {"loadBalancer": {}}


def _ingress_update(old: Obj, new: Obj, _store: Store) -> None:
    spec = new.setdefault("spec", {})
    if spec.get("ingressClassName") is None and (old.get("spec") or {}).get("ingressClassName"):
        spec["ingressClassName"] = old["spec"]["ingressClassName"]
    validate(new)


def _hosts(o: Obj) -> str:
    hosts = [r.get("host") or "*" for r in (o.get("spec") or {}).get("rules") or []]
    return ",".join(hosts) or "*"


INGRESSCLASSES = ResourceType(
    "networking.k8s.io",
    "v1",
    "IngressClass",
    "ingressclasses",
    namespaced=False,
    columns=(
        NAME,
        Column("Controller", "string", "", lambda o: (o.get("spec") or {}).get("controller", "")),
        Column(
            "Parameters",
            "string",
            "",
            lambda o: (o.get("spec") or {}).get("parameters", {}).get("name", "<none>"),
        ),
        AGE,
    ),
)
INGRESSES = ResourceType(
    "networking.k8s.io",
    "v1",
    "Ingress",
    "ingresses",
    namespaced=True,
    short_names=("ing",),
    subresources=("status",),
    on_create=_ingress_create,
    on_update=_ingress_update,
    merge_keys={},
    columns=(
        NAME,
        Column("Class", "string", "", lambda o: (o.get("spec") or {}).get("ingressClassName") or "<none>"),
        Column("Hosts", "string", "", _hosts),
        Column(
            "Address",
            "string",
            "",
            lambda o: ",".join(
                i.get("ip") or i.get("hostname", "")
                for i in ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            ),
        ),
        Column("Ports", "string", "", lambda o: "80, 443" if (o.get("spec") or {}).get("tls") else "80"),
        AGE,
    ),
)


def register(registry: Registry) -> None:
    for rtype in (INGRESSCLASSES, INGRESSES):
        if registry.get(rtype.group, rtype.version, rtype.plural) is None:
            registry.register(rtype)


def seed(store: Store) -> None:
    if store.get(INGRESSCLASSES, "", "traefik") is None:
        store.create(INGRESSCLASSES, dict(TRAEFIK))
