"""The aiohttp routes of the Kubernetes API: discovery (``/api``, ``/apis``, group/version resource lists),
``/version``, health checks, and create/get/list/watch/update/patch/delete of every registered type.

Authentication is by client certificate, as K3s's apiserver runs with anonymous auth off: the admin
certificate (group ``system:masters``) may do anything; node certificates (``system:node:<name>`` in
``system:nodes``) may read and write nodes and leases; a request without a certificate gets 401."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

from . import openapi, tables, validation
from . import patch as patches
from .errors import UNAUTHORIZED, ApiError, already_exists, bad_request, conflict, forbidden, not_found
from .registry import Obj, Registry, ResourceType
from .selectors import field_matcher, label_matcher
from .store import Event, Store

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# POST to a subresource other than status (``pods/binding``): (request, type, namespace, name) -> response
SubresourceHandler = Callable[[web.Request, ResourceType, str, str], Awaitable[web.StreamResponse]]
# deletes one object as the apiserver's registry does (finalizers, graceful deletion, propagation):
# (type, current object, DeleteOptions) -> the object to answer with
Deleter = Callable[[ResourceType, Obj, Obj], Obj]
HEALTH_CHECKS = ("ping", "log", "etcd", "informer-sync", "shutdown")
NODE_READS = frozenset(
    {
        "namespaces",
        "pods",
        "services",
        "endpoints",
        "endpointslices",
        "configmaps",
        "secrets",
        "persistentvolumeclaims",
        "persistentvolumes",
    }
)


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]


@dataclass
class ApiServer:
    registry: Registry
    store: Store
    version_info: dict[str, str]
    advertise: str  # host:port for serverAddressByClientCIDRs
    ready: Callable[[], bool] = lambda: True
    extra_routes: list[web.RouteDef] = field(default_factory=list)
    # discovery entries served by extra_routes (group, version, APIResource), e.g. pods/exec
    extra_resources: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    # behaviour the controllers (``controllers/``) hang on the routes; the defaults store as sent
    subresource_handlers: dict[tuple[str, str, str], SubresourceHandler] = field(default_factory=dict)
    deleter: Deleter | None = None
    on_written: Callable[[ResourceType, Obj], None] | None = None
    # set when the server stops (``app.on_shutdown``): open watches end, as the apiserver ends them
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    # --- identity -----------------------------------------------------------------------------------
    @staticmethod
    def user(request: web.Request) -> User | None:
        transport = request.transport
        cert = transport.get_extra_info("peercert") if transport is not None else None
        if not cert:
            return None
        cn, orgs = "", []
        for rdn in cert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    cn = value
                elif key == "organizationName":
                    orgs.append(value)
        return User(cn, (*orgs, "system:authenticated"))

    def authorize(self, user: User, verb: str, rtype: ResourceType, name: str, namespace: str) -> None:
        if "system:masters" in user.groups:
            return
        # the node authorizer's gist: a kubelet writes nodes, leases and events, reads what its pods need
        # (and kube-proxy the Services and endpoints), writes pod status and deletes its terminated pods
        read_only = rtype.plural in NODE_READS and verb in {"get", "list", "watch"}
        pod_write = rtype.plural == "pods" and verb in {"patch", "update", "delete"}
        if "system:nodes" in user.groups and (
            rtype.plural in {"nodes", "leases", "events"} or read_only or pod_write
        ):
            return
        raise forbidden(user.name, verb, rtype.plural, name, group=rtype.group, namespace=namespace)

    # --- responses ----------------------------------------------------------------------------------
    @staticmethod
    def json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            text=json.dumps(body), status=status, content_type="application/json", headers=headers
        )

    @web.middleware
    async def errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return self.json(exc.status(), exc.code)
        except web.HTTPException:
            raise
        except Exception as exc:
            return self.json(
                ApiError(
                    500, "InternalError", f"Internal error occurred: {type(exc).__name__}: {str(exc)[:300]}"
                ).status(),
                500,
            )

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.errors], client_max_size=8 * 1024 * 1024)
        app.on_shutdown.append(self._stop)
        app.add_routes(self.extra_routes)
        app.add_routes(
            [
                web.get("/version", self.version),
                web.get("/version/", self.version),
                web.get("/readyz", self.health),
                web.get("/livez", self.health),
                web.get("/healthz", self.health),
                web.get("/readyz/{check}", self.health_check),
                web.get("/livez/{check}", self.health_check),
                web.get("/healthz/{check}", self.health_check),
                web.get("/api", self.core_versions),
                web.get("/api/", self.core_versions),
                web.get("/openapi/v3", self.openapi_index),
                web.get("/openapi/v3/{path:.*}", self.openapi_document),
                web.get("/apis", self.group_list),
                web.get("/apis/", self.group_list),
                web.route("*", "/api/{version}", self.resource_list_core),
                web.route("*", "/api/{version}/{path:.*}", self.resources_core),
                web.get("/apis/{group}", self.group),
                web.route("*", "/apis/{group}/{version}", self.resource_list_group),
                web.route("*", "/apis/{group}/{version}/{path:.*}", self.resources_group),
            ]
        )
        return app

    async def _stop(self, _app: web.Application) -> None:
        self.stopping.set()

    def authenticated(self, request: web.Request) -> User:
        user = self.user(request)
        if user is None:
            raise UNAUTHORIZED
        return user

    # --- non-resource paths -------------------------------------------------------------------------
    async def version(self, request: web.Request) -> web.Response:
        self.authenticated(request)
        return self.json(self.version_info)

    async def health(self, request: web.Request) -> web.Response:
        self.authenticated(request)
        ok = self.ready()
        checks = list(HEALTH_CHECKS)
        if "verbose" in request.query:
            lines = [f"[+]{c} ok" for c in checks]
            if not ok:
                lines[-1] = f"[-]{checks[-1]} failed: reason withheld"
            path = request.path.lstrip("/")
            lines.append(f"{path} check passed" if ok else f"{path} check failed")
            return web.Response(text="\n".join(lines) + "\n", status=200 if ok else 500)
        return web.Response(
            text="ok" if ok else "[-]poststarthook failed: reason withheld\n",
            status=200 if ok else 500,
            content_type="text/plain",
        )

    async def openapi_index(self, request: web.Request) -> web.Response:
        self.authenticated(request)
        return self.json(openapi.index(self.registry))

    async def openapi_document(self, request: web.Request) -> web.Response:
        self.authenticated(request)
        parts = request.match_info["path"].strip("/").split("/")
        if len(parts) == 2 and parts[0] == "api":
            group, version = "", parts[1]
        elif len(parts) == 3 and parts[0] == "apis":
            group, version = parts[1], parts[2]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not self.registry.in_version(group, version):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return web.Response(
            text=openapi.document_text(self.registry, group, version), content_type="application/json"
        )

    async def health_check(self, request: web.Request) -> web.Response:
        """One named check, e.g. ``/readyz/ping``; unknown names are 404 as on the apiserver."""
        self.authenticated(request)
        if request.match_info["check"] not in HEALTH_CHECKS:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return web.Response(text="ok", content_type="text/plain")

    async def core_versions(self, request: web.Request) -> web.Response:
        self.authenticated(request)
        return self.json(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.advertise}],
            }
        )

    def _group_body(self, group: str) -> dict[str, Any]:
        versions = self.registry.versions(group)
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    async def group_list(self, request: web.Request) -> web.Response:
        self.authenticated(request)
        groups = [self._group_body(g) for g in self.registry.groups()]
        return self.json({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    async def group(self, request: web.Request) -> web.Response:
        self.authenticated(request)
        group = request.match_info["group"]
        if group not in self.registry.groups():
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return self.json({"kind": "APIGroup", "apiVersion": "v1", **self._group_body(group)})

    def _resource_list(self, group: str, version: str) -> web.Response:
        types = self.registry.in_version(group, version)
        if not types:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources: list[dict[str, Any]] = []
        for t in types:
            entry: dict[str, Any] = {
                "name": t.plural,
                "singularName": t.single,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": list(t.verbs),
            }
            if t.short_names:
                entry["shortNames"] = list(t.short_names)
            if t.categories:
                entry["categories"] = list(t.categories)
            entry["storageVersionHash"] = uuid.uuid5(uuid.NAMESPACE_OID, f"{t.api_version}/{t.kind}").hex[:12]
            resources.append(entry)
            for sub in t.subresources:
                resources.append(
                    {
                        "name": f"{t.plural}/{sub}",
                        "singularName": "",
                        "namespaced": t.namespaced,
                        "kind": t.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        resources += [entry for g, v, entry in self.extra_resources if (g, v) == (group, version)]
        gv = f"{group}/{version}" if group else version
        return self.json(
            {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
        )

    async def resource_list_core(self, request: web.Request) -> web.Response:
        self.authenticated(request)
        return self._resource_list("", request.match_info["version"])

    async def resource_list_group(self, request: web.Request) -> web.Response:
        self.authenticated(request)
        return self._resource_list(request.match_info["group"], request.match_info["version"])

    # --- resource paths -----------------------------------------------------------------------------
    async def resources_core(self, request: web.Request) -> web.StreamResponse:
        return await self._dispatch(request, "", request.match_info["version"], request.match_info["path"])

    async def resources_group(self, request: web.Request) -> web.StreamResponse:
        return await self._dispatch(
            request, request.match_info["group"], request.match_info["version"], request.match_info["path"]
        )

    def _route(self, group: str, version: str, parts: list[str]) -> tuple[ResourceType, str, str, str]:
        """(type, namespace, name, subresource) for the path segments after the group/version."""
        not_found_err = ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = ""
        if len(parts) >= 3 and parts[0] == "namespaces":
            candidate = self.registry.get(group, version, parts[2])
            if candidate is not None and candidate.namespaced:
                namespace, parts = parts[1], parts[2:]
        if not parts or len(parts) > 3:
            raise not_found_err
        rtype = self.registry.get(group, version, parts[0])
        if rtype is None:
            raise not_found_err
        name = parts[1] if len(parts) > 1 else ""
        sub = parts[2] if len(parts) > 2 else ""
        if sub and sub not in rtype.subresources:
            raise not_found_err
        return rtype, namespace, name, sub

    async def _dispatch(
        self, request: web.Request, group: str, version: str, path: str
    ) -> web.StreamResponse:
        user = self.authenticated(request)
        parts = [p for p in path.split("/") if p]
        rtype, namespace, name, sub = self._route(group, version, parts)
        method = request.method
        watch = request.query.get("watch") in {"1", "true", "True"}
        verb = {
            "GET": ("watch" if watch else ("get" if name else "list")),
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }.get(method)
        if verb is None or verb not in rtype.verbs:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        self.authorize(user, verb, rtype, name, namespace)
        custom = self.subresource_handlers.get((rtype.group, rtype.plural, sub)) if sub else None
        if custom is not None and method == "POST":
            return await custom(request, rtype, namespace, name)
        if rtype.namespaced and namespace and verb == "create":
            from .core import NAMESPACES  # noqa: PLC0415 - core imports nothing from here at load time

            if self.store.get(NAMESPACES, "", namespace) is None:
                raise not_found("namespaces", namespace)
        if verb == "list":
            return self._list(request, rtype, namespace or None)
        if verb == "watch":
            return await self._watch(request, rtype, namespace or None, name)
        if verb == "get":
            return self._get(request, rtype, namespace, name)
        if verb == "create":
            return await self._create(request, rtype, namespace)
        if verb in {"update", "patch"}:
            return await self._write(request, rtype, namespace, name, sub=sub, verb=verb)
        if verb == "delete":
            return self._delete(rtype, namespace, name, await self._delete_options(request))
        return self._delete_collection(request, rtype, namespace or None, await self._delete_options(request))

    # helpers
    @staticmethod
    def _wants_table(request: web.Request) -> bool:
        return "as=Table" in request.headers.get("Accept", "")

    def _filtered(self, request: web.Request, rtype: ResourceType, namespace: str | None) -> list[Obj]:
        labels = label_matcher(request.query.get("labelSelector"))
        fields = field_matcher(request.query.get("fieldSelector"))
        return [
            o
            for o in self.store.list(rtype, namespace)
            if labels(o["metadata"].get("labels") or {}) and fields(o)
        ]

    def _list(self, request: web.Request, rtype: ResourceType, namespace: str | None) -> web.Response:
        items = self._filtered(request, rtype, namespace)
        rv = str(self.store.resource_version)
        if self._wants_table(request):
            return self.json(tables.table(rtype, items, rv, request.query.get("includeObject", "")))
        for item in items:
            item.setdefault("apiVersion", rtype.api_version)
            item.setdefault("kind", rtype.kind)
        return self.json(
            {
                "kind": f"{rtype.kind}List",
                "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": rv},
                "items": items,
            }
        )

    def _get(self, request: web.Request, rtype: ResourceType, namespace: str, name: str) -> web.Response:
        obj = self.store.get(rtype, namespace, name)
        if obj is None:
            raise not_found(rtype.plural, name, rtype.group)
        if self._wants_table(request):
            return self.json(
                tables.table(
                    rtype, [obj], obj["metadata"]["resourceVersion"], request.query.get("includeObject", "")
                )
            )
        return self.json(obj)

    async def _watch(
        self, request: web.Request, rtype: ResourceType, namespace: str | None, name: str
    ) -> web.StreamResponse:
        labels = label_matcher(request.query.get("labelSelector"))
        fields = field_matcher(request.query.get("fieldSelector"))
        if name:
            base = fields
            fields = lambda o: base(o) and o["metadata"]["name"] == name  # noqa: E731
        since = request.query.get("resourceVersion", "")
        timeout = float(request.query.get("timeoutSeconds", "1800") or 1800)
        queue = self.store.subscribe()
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        )
        await response.prepare(request)

        def matches(obj: Obj) -> bool:
            ns_ok = namespace is None or obj["metadata"].get("namespace", "") == namespace
            return ns_ok and labels(obj["metadata"].get("labels") or {}) and fields(obj)

        as_table = self._wants_table(request)
        include = request.query.get("includeObject", "")

        async def send(kind: str, obj: Obj) -> None:
            obj.setdefault("apiVersion", rtype.api_version)
            obj.setdefault("kind", rtype.kind)
            body = (
                tables.table(rtype, [obj], obj["metadata"]["resourceVersion"], include) if as_table else obj
            )
            await response.write((json.dumps({"type": kind, "object": body}) + "\n").encode())

        async def bookmark(initial_end: bool) -> None:
            meta: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            obj = {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": meta}
            await response.write((json.dumps({"type": "BOOKMARK", "object": obj}) + "\n").encode())

        initial = request.query.get("sendInitialEvents") == "true"
        try:
            if since in {"", "0"} or initial:
                for obj in self.store.list(rtype, namespace):
                    if matches(obj):
                        await send("ADDED", obj)
                if initial:
                    await bookmark(initial_end=True)
                    since = str(self.store.resource_version)
            floor = int(since) if since.isdigit() else 0
            if floor and not initial:
                replay: Sequence[Event] | None = self.store.events_after(floor)
                if replay is None:
                    gone = ApiError(
                        410, "Expired", f"too old resource version: {floor} ({self.store.resource_version})"
                    ).status()
                    await response.write((json.dumps({"type": "ERROR", "object": gone}) + "\n").encode())
                    replay = []
                    timeout = 0
                for past in replay:
                    if past.rtype.key == rtype.key and matches(past.obj):
                        await send(past.type, copy.deepcopy(past.obj))
                    floor = past.rv
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not self.stopping.is_set():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    # wake at least every second to notice a client that went away or the server stopping
                    event: Event = await asyncio.wait_for(queue.get(), min(remaining, 1.0))
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    continue
                if event.rtype.key != rtype.key or event.rv <= floor or not matches(event.obj):
                    continue
                await send(event.type, event.obj)
        except ConnectionResetError:
            pass
        finally:
            self.store.unsubscribe(queue)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        try:
            if ctype.endswith("yaml"):
                return yaml.safe_load(raw.decode() or "null")
            return json.loads(raw.decode() or "null")
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the body of the request could not be decoded: {exc}") from exc

    def _check_kind(self, rtype: ResourceType, obj: Any) -> Obj:
        if not isinstance(obj, dict):
            raise bad_request(f"Object '{rtype.kind}' is not a JSON object")
        if (
            obj.get("apiVersion", rtype.api_version) != rtype.api_version
            or obj.get("kind", rtype.kind) != rtype.kind
        ):
            raise bad_request(
                f"the API version in the data ({obj.get('apiVersion')}) does not match the expected API "
                f"version ({rtype.api_version})"
                if obj.get("kind", rtype.kind) == rtype.kind
                else "the server rejected our request for an unknown reason "
                f"(kind {obj.get('kind')} is not {rtype.kind})"
            )
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        if not isinstance(obj.get("metadata", {}), dict):
            raise bad_request(
                f'{rtype.kind} in version "{rtype.version}" cannot be handled as a {rtype.kind}: '
                "metadata must be an object"
            )
        obj.setdefault("metadata", {})
        return obj

    def _validate(self, request: web.Request, rtype: ResourceType, obj: Obj) -> list[str]:
        return validation.validate(rtype, obj, request.query.get("fieldValidation", ""))

    @staticmethod
    def _warned(body: Obj, warnings: list[str], status: int = 200) -> web.Response:
        headers = {"Warning": ", ".join(f'299 - "{w}"' for w in warnings)} if warnings else None
        return ApiServer.json(body, status, headers)

    async def _create(self, request: web.Request, rtype: ResourceType, namespace: str) -> web.Response:
        obj = self._check_kind(rtype, await self._body(request))
        meta = obj["metadata"]
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{rtype.kind} "" is invalid: metadata.name: Required value: name '
                    "or generateName is required",
                )
        if rtype.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace or body_ns or "default"
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise ApiError(500, "InternalError", "resourceVersion should not be set on objects to be created")
        warnings = self._validate(request, rtype, obj)
        if self.store.get(rtype, meta.get("namespace", ""), meta["name"]) is not None:
            raise already_exists(rtype.plural, meta["name"], rtype.group)
        if rtype.on_create is not None:
            rtype.on_create(obj, self.store)
        if request.query.get("dryRun") == "All":
            return self._warned(obj, warnings, 201)
        return self._warned(self.store.create(rtype, obj), warnings, 201)

    async def _write(
        self, request: web.Request, rtype: ResourceType, namespace: str, name: str, *, sub: str, verb: str
    ) -> web.Response:
        current = self.store.get(rtype, namespace, name)
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        if current is None:
            if verb == "patch" and ctype == patches.APPLY:
                # server-side apply creates what does not exist
                obj = self._check_kind(rtype, await self._body(request))
                obj["metadata"]["name"] = name
                if rtype.namespaced:
                    obj["metadata"]["namespace"] = namespace
                warnings = self._validate(request, rtype, obj)
                if rtype.on_create is not None:
                    rtype.on_create(obj, self.store)
                return self._warned(self.store.create(rtype, obj), warnings, 201)
            raise not_found(rtype.plural, name, rtype.group)
        current.setdefault("apiVersion", rtype.api_version)
        current.setdefault("kind", rtype.kind)
        body = await self._body(request)
        if verb == "patch":
            if ctype == patches.APPLY and not request.query.get("fieldManager"):
                raise ApiError(
                    422,
                    "Invalid",
                    'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required '
                    "value: is required for apply patch",
                )
            new = patches.apply(ctype, current, body, rtype.merge_keys)
        else:
            new = body
        new = self._check_kind(rtype, new)
        meta = new["metadata"]
        if meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        meta["name"] = name
        if rtype.namespaced:
            meta["namespace"] = namespace
        sent_rv = meta.get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise conflict(rtype.plural, name, rtype.group)
        # the server owns these fields
        for key in (
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if key in current["metadata"]:
                meta[key] = current["metadata"][key]
            else:
                meta.pop(key, None)
        if "status" in rtype.subresources:
            if sub == "status":
                new = {**current, "status": new.get("status", current.get("status"))}
                meta = new["metadata"] = copy.deepcopy(current["metadata"])
            elif "status" in current:
                new["status"] = current["status"]
            else:
                new.pop("status", None)
        warnings = self._validate(request, rtype, new)
        if rtype.on_update is not None:
            rtype.on_update(current, new, self.store)
        if rtype.uses_generation and new.get("spec") != current.get("spec"):
            new["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if new == current or request.query.get("dryRun") == "All":
            return self._warned(current if new == current else new, warnings)
        written = self.store.replace(rtype, new)
        if self.on_written is not None:
            self.on_written(rtype, written)
        return self._warned(written, warnings)

    async def _delete_options(self, request: web.Request) -> Obj:
        """DeleteOptions from the body (kubectl, client-go) and the query (gracePeriodSeconds, ...)."""
        options: Obj = {}
        if request.can_read_body:
            body = await self._body(request)
            if isinstance(body, dict):
                options.update(body)
        for key in ("gracePeriodSeconds", "propagationPolicy", "orphanDependents"):
            if key in request.query:
                value: Any = request.query[key]
                if key == "gracePeriodSeconds":
                    try:
                        value = int(value)
                    except ValueError as exc:
                        raise bad_request(f"gracePeriodSeconds: invalid value {value!r}") from exc
                elif key == "orphanDependents":
                    value = value == "true"
                options[key] = value
        if request.query.get("dryRun"):
            options["dryRun"] = [request.query["dryRun"]]
        return options

    def delete_object(self, rtype: ResourceType, current: Obj, options: Obj) -> Obj:
        if self.deleter is not None:
            return self.deleter(rtype, current, options)
        if rtype.on_delete is not None:
            rtype.on_delete(current, self.store)
        meta = current["metadata"]
        return self.store.delete(rtype, meta.get("namespace", ""), meta["name"]) or current

    def _delete(self, rtype: ResourceType, namespace: str, name: str, options: Obj) -> web.Response:
        current = self.store.get(rtype, namespace, name)
        if current is None:
            raise not_found(rtype.plural, name, rtype.group)
        return self.json(self.delete_object(rtype, current, options))

    def _delete_collection(
        self, request: web.Request, rtype: ResourceType, namespace: str | None, options: Obj
    ) -> web.Response:
        items = [self.delete_object(rtype, obj, options) for obj in self._filtered(request, rtype, namespace)]
        return self.json(
            {
                "kind": f"{rtype.kind}List",
                "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": str(self.store.resource_version)},
                "items": items,
            }
        )
