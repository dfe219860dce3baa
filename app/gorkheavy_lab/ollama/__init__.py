"""A stand-in for an Ollama server (v0.33 native API), faithful on the wire.

It answers the way ``ollama serve`` does: the same paths and methods, the same JSON field names and order as
the Go structs of ``api/types.go``, NDJSON streams (``application/x-ndjson``) with a final ``done`` chunk
carrying ``done_reason`` and the ``*_duration`` / ``*_count`` metrics, ``created_at`` as Go prints times,
and the real server's refusals with their status codes and ``{"error": "..."}`` messages (copies of the
API references are in ``tests/fixtures/ollama/``). The models do not think: each answers what its
``ModelBehavior`` says, after the configured latency.

Endpoints: ``GET|HEAD /``, ``GET|HEAD /api/version``, ``GET|HEAD /api/tags``, ``GET /api/ps``,
``POST /api/show``, ``POST /api/chat``, ``POST /api/generate``, ``POST /api/embed``,
``POST /api/embeddings``, ``POST /api/pull``, ``DELETE /api/delete``. Other paths: ``404 page not found``;
another method on a known path: ``405 method not allowed`` (both ``text/plain``, as gin answers).

Python API::

    from gorkheavy_lab.ollama import ModelBehavior, OllamaStandin

    standin = OllamaStandin(  # models: {name: ModelBehavior or None} or just names
        {
            "gemma3:1b": ModelBehavior(latency=0.05),  # default reply, derived from the request
            "granite4:350m": ModelBehavior(reply="fixed text", chunk_delay=0.01),
            "judge:latest": ModelBehavior(reply=lambda body: '{"winner": 1}'),  # body: the parsed request
        },
        version="0.33.0",  # what /api/version says
        allow_pull=True,  # /api/pull of an unknown name succeeds and installs it (False: manifest error)
        pull_errors={"broken:1b": "pull model manifest: file does not exist"},
        max_queue=512,  # requests waiting for a busy model (see ``parallel``) before 503 "server busy"
        record=True,  # keep every request in ``standin.requests``
    )
    async with standin.serve(host="127.0.0.1", port=0) as base_url:  # "http://127.0.0.1:PORT"
        client = ollama.AsyncClient(host=base_url)
        ...
    with standin.serve_in_thread() as base_url:  # for synchronous code: own loop in a daemon thread
        ...

    standin.add_model("qwen3:0.6b", ModelBehavior(thinking="Let me see."))  # returns the live behaviour
    standin.remove_model("qwen3:0.6b")
    standin.behavior("gemma3:1b").latency = 0.2  # live: applies to the next request
    standin.configure("gemma3:1b", failure="mid_stream_error", failure_count=1)  # same, validated
    standin.requests  # [RecordedRequest(method, path, body, model, start, end, first_chunk, status, outcome)]
    standin.requests_for(path="/api/chat", model="gemma3:1b")
    standin.clear_requests()
    standin.in_flight, standin.peak_in_flight  # requests being handled now / at most at once
    standin.loaded_models()  # what /api/ps shows
    standin.make_app()  # the aiohttp Application, e.g. for aiohttp's own test client

``ModelBehavior`` fields (all optional; see its docstring): ``reply`` (str or ``f(body) -> str``),
``thinking``, ``tool_calls``, ``latency`` (time to first token), ``load_latency`` (when not loaded),
``chunk_delay``, ``chunks``, ``parallel`` (requests answered at once; ``None``: unlimited), ``failure``
(``none`` | ``http_500`` | ``hang`` | ``mid_stream_error`` | ``disconnect`` | ``malformed`` | ``stall`` |
``endless``),
``failure_after_chunks``, ``failure_count``, ``error_message``, ``error_status``, ``capabilities``,
``family``, ``parameter_size``, ``quantization_level``, ``size``, ``context_length``,
``embedding_length``.

What the answers contain: without ``reply``, ``"<model> answer <hash>: <first words of the last user
message>"``; with ``format: "json"``, ``{"model": ..., "answer": ...}``; with a JSON schema as ``format``,
an instance of that schema. ``options.num_predict`` cuts the answer (``done_reason: "length"``),
``options.stop`` ends it early. ``keep_alive`` (a number of seconds or a Go duration string; negative: for
ever; 0 with no messages/prompt unloads) sets what ``/api/ps`` shows. Times in the final chunk are
measured: ``load_duration`` up to the model being loaded, ``prompt_eval_duration`` up to the first token
(``latency``), ``eval_duration`` the streaming, ``total_duration`` all of it, in nanoseconds.

Where the stand-in departs from Ollama, on purpose: the models' answers (see above); ``parallel`` defaults
to no limit where Ollama's ``OLLAMA_NUM_PARALLEL`` is 1, and ``max_queue`` counts requests waiting for a
slot rather than for the scheduler; ``/api/pull`` fakes one layer; cloud models, ``/api/create``,
``/api/copy``, ``/api/push``, blobs and the OpenAI-compatible ``/v1`` routes are absent (404). Like
Ollama it does not check message roles, ignores unknown options, reads only the first JSON value of a
body, matches field names case-insensitively, and refuses ``"keep_alive": "-1"`` (a Go duration needs a
unit: ``"-1m"`` or the number ``-1``).

Command line (a separate process, e.g. for benchmarks)::

    python -m gorkheavy_lab.ollama --host 127.0.0.1 --port 11434 \\
        --model granite4:350m --model gemma3:1b --latency 0.05 [--chunk-delay 0.01] [--chunks N] \\
        [--reply TEXT] [--failure MODE] [--parallel N] [--max-queue 512] [--version 0.33.0] [--no-pull] \\
        [--no-record]

``--model`` may carry per-model settings: ``--model 'gemma3:1b,latency=0.2,failure=http_500'``. With
``--port 0`` the chosen port is in the first line printed: ``listening on http://127.0.0.1:PORT``.
"""

from ._models import DEFAULT_ERROR, Failure, ModelBehavior, ModelName, Reply
from ._server import OllamaStandin, RecordedRequest

__all__ = [
    "DEFAULT_ERROR",
    "Failure",
    "ModelBehavior",
    "ModelName",
    "OllamaStandin",
    "RecordedRequest",
    "Reply",
]
