"""The Kubernetes API the stand-in serves: a registry of resource types (``registry``), an object store with
resourceVersions and watches (``store``), validation against the bundled 1.36 schemas (``validation``),
patches (``patch``), server-side tables (``tables``) and the aiohttp routes (``api``). The ensemble stage adds
resource types with ``Registry.register`` and, where a type needs behaviour, hooks on its ``ResourceType``."""
