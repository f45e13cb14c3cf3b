"""``autodeco serve``: a local OpenAI-compatible server with per-token T and P (docs/server.md).

``autodeco serve --engine llama-cpp --model X.gguf --heads H.gguf``,
``--engine transformers --model FOLDER [--heads H]`` or ``--model smollm2`` (the real model by
name, llama-cpp unless ``--engine`` says otherwise; the model id is then ``smollm2``);
listens on 127.0.0.1:8000 by default.
The model and heads are checked before anything is loaded (the same checks and messages as
``autodeco generate``); the server starts listening only once the engine is loaded, then
prints ``listening on http://HOST:PORT`` on stderr (``--json``: one JSON object on stdout),
once the socket listens. Security defaults (docs/server.md): Host and Origin are checked
(``--allowed-host``, ``--cors-origin`` widen them) and chat message text is plain text
(``--parse-special-in-messages`` parses special tokens in it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autodeco_samplers.core.errors import AutoDecoError, UsageError
from autodeco_samplers.frontends.validation import non_negative_float, positive_int

from autodeco_samplers.frontends.cli._common import add_device_threads, add_json, resolve_device, resolve_threads, set_torch_threads

ENGINES = ("llama-cpp", "transformers")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="an OpenAI-compatible server (llama.cpp or transformers) with per-token T and P")
    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="required with a model path; --model smollm2 defaults to llama-cpp")
    p.add_argument("--model", required=True,
                   help="model folder (transformers), .gguf file (llama-cpp), or smollm2 (the real model, by name)")
    p.add_argument("--heads", default=None, help="heads checkpoint (llama-cpp: required; transformers: default the model's own, if merged)")
    p.add_argument("--model-name", default=None, help="the model id clients send (default: the model's file or folder name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--parallel", type=positive_int, default=4, metavar="N",
                   help="sequence slots decoded together (continuous batching); 1 runs one sequence at a time "
                        "(default 4)")
    p.add_argument("--max-queue", type=positive_int, default=64,
                   help="requests that may wait for the engine; one more gets 503 (default 64)")
    p.add_argument("--temperature", type=non_negative_float, default=1.0,
                   help="server-wide multiplier of the predicted T; a request's temperature multiplies it (0 = greedy)")
    p.add_argument("--top-p", type=non_negative_float, default=1.0,
                   help="server-wide multiplier of the predicted P; a request's top_p multiplies it")
    p.add_argument("--chat-template", metavar="FILE", default=None,
                   help="a Jinja chat template to use instead of the model's own (GGUF metadata or tokenizer_config.json)")
    p.add_argument("--seed", type=int, default=None, help="seed for requests that send none (default: random)")
    p.add_argument("--n-ctx", type=positive_int, default=None,
                   help="llama-cpp only: context size (default: the model's training context, at most 4096)")
    p.add_argument("--f32-kv-cache", action="store_true", help="llama-cpp only: keep the KV cache in float32")
    p.add_argument("--shutdown-timeout", type=non_negative_float, default=10.0,
                   help="after SIGTERM, seconds requests in flight may run on before they are ended (default 10)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host header is NAME (repeatable; '*': any). Default: the --host "
                        "address, localhost and IP addresses only (a DNS-rebinding page is refused)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let web pages of ORIGIN (e.g. http://localhost:3000; repeatable; '*': any) call the server, "
                        "with CORS headers and preflight answers. Default: cross-origin browser requests get 403")
    p.add_argument("--parse-special-in-messages", action="store_true",
                   help="parse special-token text (e.g. <|im_end|>) inside chat messages as special tokens; default: "
                        "message text is plain text, so a message cannot forge conversation turns")
    p.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"), default="warning",
                   help="uvicorn's log level (default warning)")
    add_device_threads(p)
    add_json(p)
    p.set_defaults(func=run)


def check_flags(args: argparse.Namespace) -> None:
    """Flags one engine does not understand are usage errors with the other (``args.engine``
    is resolved first: :func:`~autodeco_samplers.frontends.cli.generate_cmd.resolve_model_args`)."""
    if args.engine != "llama-cpp":
        if args.f32_kv_cache:
            raise UsageError("--f32-kv-cache applies to --engine llama-cpp only")
        if args.n_ctx is not None:
            raise UsageError("--n-ctx applies to --engine llama-cpp only (transformers uses the model's max_position_embeddings)")
    elif args.device not in ("auto", "cpu"):
        raise UsageError(f"--engine llama-cpp runs on the CPU here; --device {args.device} is not supported")
    if args.engine == "llama-cpp" and not args.heads:
        raise UsageError("--engine llama-cpp needs --heads (a sidecar from `autodeco export-heads`, or any heads checkpoint)")


def _server_deps() -> None:
    from autodeco_samplers.core.errors import MissingDependencyError
    from autodeco_samplers.frontends.validation import install_command

    for module in ("fastapi", "uvicorn", "pydantic"):
        try:
            __import__(module)
        except ImportError:
            raise MissingDependencyError(f"autodeco serve needs {module}; install it with: {install_command('server')}",
                                         package=module, extra="server") from None


def build_engine(args: argparse.Namespace, threads):
    """The engine ``args`` describe, loaded (validated first, as ``autodeco generate`` does).
    The server-wide policy is not the engine's: each request gets
    ``policy.for_request(temperature, top_p)`` from the server (docs/server.md)."""
    from autodeco_samplers.frontends.validation import check_heads_fit, inspect_model

    info = inspect_model(args.engine, args.model)
    heads = args.heads
    if heads is None:
        if not info.merged:
            raise UsageError(f"--heads is required: {info.path} is not a merged AutoDeco checkpoint that carries its own heads")
        heads = str(info.path)
    check_heads_fit(info, heads)
    template = None
    if args.chat_template is not None:
        path = Path(args.chat_template)
        try:
            template = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise AutoDecoError(f"{path}: cannot read the chat template ({exc.strerror or exc})") from None
    name = args.model_name or Path(args.model).name
    if args.engine == "llama-cpp":
        if Path(args.model).suffix.lower() != ".gguf":
            from autodeco_samplers.core.errors import CheckpointError

            raise CheckpointError(f"{args.model}: --engine llama-cpp needs a model .gguf file")
        from autodeco_samplers.frontends.server.engines import LlamaCppEngine

        return LlamaCppEngine(args.model, heads, model_name=name, n_ctx=args.n_ctx, f32_kv_cache=args.f32_kv_cache,
                              n_threads=threads, seed=args.seed, chat_template=template,
                              parallel=args.parallel)
    set_torch_threads(threads)
    from autodeco_samplers.frontends.server.engines import TransformersEngine

    return TransformersEngine(args.model, args.heads, model_name=name, device=resolve_device(args.device),
                              seed=args.seed, chat_template=template, parallel=args.parallel)


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.core.policy import DecodingPolicy
    from autodeco_samplers.frontends.server import serve

    from autodeco_samplers.frontends.cli._models import is_named_model
    from autodeco_samplers.frontends.cli.generate_cmd import is_default_model, resolve_model_args

    if is_named_model(args.model) and args.model_name is None:
        args.model_name = args.model
    resolve_model_args(args)
    check_flags(args)
    _server_deps()
    threads = resolve_threads(args.threads, default_model=is_default_model(args.model))
    policy = DecodingPolicy(temperature=args.temperature, top_p=args.top_p)
    engine = build_engine(args, threads)

    def listening(host: str, port: int) -> None:
        url = f"http://{host}:{port}"
        if args.json:
            print(json.dumps({"url": url, "host": host, "port": port, "engine": engine.engine_name,
                              "model": engine.model_name, "n_ctx": engine.n_ctx}), flush=True)
        print(f"autodeco serve: listening on {url} (engine {engine.engine_name}, model {engine.model_name!r}, "
              f"context {engine.n_ctx}); Ctrl-C or SIGTERM stops it", file=sys.stderr, flush=True)

    serve(engine, host=args.host, port=args.port, policy=policy, max_queue=args.max_queue,
          shutdown_timeout=args.shutdown_timeout, log_level=args.log_level, on_listening=listening,
          allowed_hosts=args.allowed_host, cors_origins=args.cors_origin,
          parse_special_in_messages=args.parse_special_in_messages)
    return 0
