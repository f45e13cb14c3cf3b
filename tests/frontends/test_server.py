"""``autodeco serve`` end to end: real server subprocesses on 127.0.0.1, the ``openai`` client.

Servers (each started once per module, stopped with SIGTERM):

* ``llama``: the llama.cpp engine on the embedded default model converted to GGUF with a chat
  template (float32 KV cache, so the reference below agrees to ~1e-6);
* ``hf``: the transformers engine on the same model folder and heads;
* ``busy``: llama.cpp on a random seeded tiny model (long generations) with a queue of 1;
* one more for SIGTERM, started and stopped inside its test.

References never go through the server: ``autodeco generate --json`` (same seed) for the trace,
and a teacher-forced transformers forward + :func:`autodeco_samplers.core.reference.next_token_distribution`
for the log-probabilities.
"""

from __future__ import annotations

import asyncio
import json
import math
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
pytest.importorskip("llama_cpp")
pytest.importorskip("transformers")

from _server_util import MODEL, PROMPT, Server, chat_assets, generate_json, sse_lines  # noqa: E402

TRACE = {"autodeco": {"trace": True}}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def assets():
    return chat_assets()


@pytest.fixture(scope="module")
def llama(assets):
    server = Server(["--engine", "llama-cpp", "--model", str(assets["gguf"]), "--heads", str(assets["heads_gguf"]),
                     "--model-name", MODEL, "--threads", "1", "--f32-kv-cache"])
    yield server
    assert server.stop() == 0, server.stderr()


@pytest.fixture(scope="module")
def hf(assets):
    server = Server(["--engine", "transformers", "--model", str(assets["folder"]), "--heads", str(assets["heads"]),
                     "--model-name", MODEL, "--threads", "1"])
    yield server
    assert server.stop() == 0, server.stderr()


@pytest.fixture(scope="module")
def busy():
    from _llama_util import assets as llama_assets

    a = llama_assets()
    server = Server(["--engine", "llama-cpp", "--model", str(a["gguf_f32"]), "--heads", str(a["heads_gguf"]),
                     "--model-name", "random", "--threads", "1", "--n-ctx", "4096", "--max-queue", "1"])
    yield server
    assert server.stop() == 0, server.stderr()


@pytest.fixture(scope="module")
def hf_model(assets):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(assets["folder"]).eval()


@pytest.fixture(scope="module")
def tokenizer(assets):
    from autodeco_samplers.adapters.transformers import load_tokenizer

    return load_tokenizer(assets["folder"])


def completion(server, **kw):
    """A completion through the openai client, as a plain dict (extension fields included)."""
    extra = kw.pop("extra_body", None)
    return server.client().completions.create(model=MODEL, extra_body=extra, **kw).model_dump()


def trace_of(choice):
    return choice["autodeco"]["trace"]


def token_ids(choice):
    return [s["token_id"] for s in trace_of(choice)]


def stream_completion(server, body):
    """A raw streamed completion: the parsed chunks, and whether it ended with ``data: [DONE]``."""
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = sse_lines(r)
    assert lines and lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines[:-1]]


# ----------------------------------------------------------------------------- basics


def test_models_health_and_loopback(llama):
    assert llama.info["host"] == "127.0.0.1"
    models = llama.client().models.list()
    assert [m.id for m in models.data] == [MODEL]
    h = llama.health()
    assert h["status"] == "ok" and h["engine"] == "llama-cpp" and h["chat_template"] is True
    assert llama.client().models.retrieve(MODEL).id == MODEL


@pytest.mark.parametrize("engine", ["llama", "hf"])
def test_completion_fields(engine, request):
    server = request.getfixturevalue(engine)
    out = completion(server, prompt=PROMPT, max_tokens=20, seed=3, extra_body=TRACE)
    assert out["object"] == "text_completion" and out["model"] == MODEL
    (choice,) = out["choices"]
    steps = trace_of(choice)
    assert len(steps) == out["usage"]["completion_tokens"] >= 1
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"]
    assert choice["finish_reason"] in ("stop", "length")
    assert choice["autodeco"]["finish_reason"] in ("eos", "stop", "length")
    assert "->" in choice["text"]  # the tiny model does its task: "<word> -> <letters backwards>"
    for s in steps:
        assert s["T"] == pytest.approx(s["T_pred"], rel=1e-6) and s["P"] == pytest.approx(s["P_pred"], rel=1e-6)


@pytest.mark.slow  # `autodeco generate` in subprocesses
@pytest.mark.parametrize("engine", ["llama", "hf"])
def test_trace_equals_generate_json(engine, request, assets):
    """Same seed, same multipliers: the server's tokens, text and per-token T/P are what
    ``autodeco generate --json`` reports."""
    server = request.getfixturevalue(engine)
    name, model, heads = (("llama-cpp", assets["gguf"], assets["heads_gguf"]) if engine == "llama"
                          else ("transformers", assets["folder"], assets["heads"]))
    for seed, t, p in ((5, 1.0, 1.0), (11, 0.8, 1.3)):
        extra = ["--f32-kv-cache"] if engine == "llama" else []  # as the server runs
        want = generate_json(name, model, heads, prompt=PROMPT, seed=seed, max_new_tokens=16, temperature=t, top_p=p,
                             extra=extra)
        out = completion(server, prompt=PROMPT, max_tokens=16, seed=seed, temperature=t, top_p=p, extra_body=TRACE)
        choice = out["choices"][0]
        assert token_ids(choice) == want["token_ids"]
        assert choice["text"] == want["text"]
        assert choice["autodeco"]["finish_reason"] == want["finish_reason"]
        assert out["usage"]["prompt_tokens"] == len(want["prompt_ids"])
        for got, ref in zip(trace_of(choice), want["steps"]):
            for key in ("T_pred", "P_pred", "T", "P"):
                assert got[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), (key, got, ref)


@pytest.mark.parametrize("engine", ["llama", "hf"])
def test_chat_uses_the_models_own_template(engine, request, tokenizer):
    server = request.getfixturevalue(engine)
    messages = [{"role": "system", "content": "spell"}, {"role": "user", "content": PROMPT}]
    chat = server.client().chat.completions.create(model=MODEL, messages=messages, max_tokens=12, seed=2,
                                                   extra_body=TRACE).model_dump()
    assert chat["object"] == "chat.completion"
    msg = chat["choices"][0]["message"]
    assert msg["role"] == "assistant"
    # the same tokens as a completion of the rendered template (computed here with the tokenizer)
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered.startswith(tokenizer.bos_token) and rendered.endswith("assistant:")
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert chat["usage"]["prompt_tokens"] == len(ids)
    plain = completion(server, prompt=ids, max_tokens=12, seed=2, extra_body=TRACE)["choices"][0]
    assert msg["content"] == plain["text"]
    assert token_ids(chat["choices"][0]) == token_ids(plain)


def test_chat_refused_without_template(busy):
    with pytest.raises(openai.BadRequestError) as err:
        busy.client().chat.completions.create(model="random", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 400
    assert "no chat template" in err.value.message
    assert busy.alive()


# ----------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("engine", ["llama", "hf"])
def test_stream_equals_answer_with_trace_in_every_chunk(engine, request):
    server = request.getfixturevalue(engine)
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 20, "seed": 7, **TRACE}
    whole = server.post("/v1/completions", body).json()["choices"][0]
    chunks = stream_completion(server, {**body, "stream": True, "stream_options": {"include_usage": True}})
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    steps = [s for c in chunks if c["choices"] for s in c["choices"][0]["autodeco"]["trace"]]
    finals = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert text == whole["text"]
    assert steps == trace_of(whole)
    assert finals == [whole["finish_reason"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(steps)
    # token chunks carry one trace entry each
    assert all(len(c["choices"][0]["autodeco"]["trace"]) <= 1 for c in chunks if c["choices"])


@pytest.mark.parametrize("engine", ["llama", "hf"])
def test_chat_stream_with_openai_client(engine, request):
    server = request.getfixturevalue(engine)
    kw = dict(model=MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=12, seed=4)
    whole = server.client().chat.completions.create(**kw).choices[0].message.content
    parts, reasons, roles = [], [], []
    for chunk in server.client().chat.completions.create(stream=True, **kw):
        d = chunk.choices[0].delta
        roles.append(d.role)
        parts.append(d.content or "")
        reasons.append(chunk.choices[0].finish_reason)
    assert roles[0] == "assistant"
    assert "".join(parts) == whole
    assert reasons[-1] in ("stop", "length") and all(r is None for r in reasons[:-1])


# ----------------------------------------------------------------------------- request fields


@pytest.mark.parametrize("engine", ["llama", "hf"])
def test_logprobs_are_the_canonical_distributions(engine, request, hf_model, tokenizer):
    """Each token's log-probability (and the top alternatives) equals the canonical distribution
    of a teacher-forced transformers forward at the T and P the trace reports."""
    import torch

    from autodeco_samplers.core.reference import next_token_distribution

    server = request.getfixturevalue(engine)
    ids = tokenizer(PROMPT)["input_ids"]
    out = completion(server, prompt=ids, max_tokens=16, seed=9, logprobs=3, temperature=1.5, top_p=1.2, extra_body=TRACE)
    choice = out["choices"][0]
    steps, lp = trace_of(choice), choice["logprobs"]
    gen = [s["token_id"] for s in steps]
    with torch.no_grad():
        logits = hf_model(torch.tensor([ids + gen])).logits[0].double().numpy()
    listed = [s for s in steps if s["token_id"] != tokenizer.eos_token_id]
    assert len(lp["token_logprobs"]) == len(listed) == len(lp["tokens"]) == len(lp["top_logprobs"])
    k = 0
    for i, s in enumerate(steps):
        if s["token_id"] == tokenizer.eos_token_id:
            continue
        ref = next_token_distribution(logits[len(ids) + i - 1], s["T"], s["P"])
        assert lp["token_logprobs"][k] == pytest.approx(math.log(ref[s["token_id"]]), abs=2e-4)
        top = lp["top_logprobs"][k]
        kept = np.flatnonzero(ref > 0)
        assert len(top) == min(3, kept.size)
        best = sorted(ref[kept], reverse=True)[: len(top)]
        assert sorted(top.values(), reverse=True) == pytest.approx([math.log(x) for x in best], abs=2e-4)
        assert lp["tokens"][k] == tokenizer.decode([s["token_id"]])
        k += 1
    assert lp["text_offset"][0] == 0


def test_chat_logprobs_shape_and_greedy(llama):
    out = llama.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}],
                                                 max_tokens=8, temperature=0, logprobs=True, top_logprobs=2)
    content = out.choices[0].logprobs.content
    assert content
    for entry in content:  # temperature 0 is greedy: one token of probability 1
        assert entry.logprob == 0.0
        assert [t.logprob for t in entry.top_logprobs] == [0.0]
        assert bytes(entry.bytes).decode("utf-8", errors="replace") == entry.token


def test_multipliers_and_greedy(llama):
    out = completion(llama, prompt=PROMPT, max_tokens=12, seed=1, temperature=0.5, top_p=0.8, extra_body=TRACE)
    for s in trace_of(out["choices"][0]):
        assert s["T"] == pytest.approx(0.5 * s["T_pred"], rel=1e-6)
        assert s["P"] == pytest.approx(min(1.0, 0.8 * s["P_pred"]), rel=1e-6)
    greedy = [completion(llama, prompt=PROMPT, max_tokens=12, seed=seed, temperature=0, extra_body=TRACE)["choices"][0]
              for seed in (1, 2)]
    assert token_ids(greedy[0]) == token_ids(greedy[1])
    assert all(s["T"] == 0 for s in trace_of(greedy[0]))


@pytest.mark.parametrize("engine", ["llama", "hf"])
def test_seeds_reproduce_and_differ(engine, request):
    server = request.getfixturevalue(engine)
    runs = {seed: [token_ids(completion(server, prompt=PROMPT, max_tokens=16, seed=seed, extra_body=TRACE)["choices"][0])
                   for _ in range(2)] for seed in (0, 1, 2, 3)}
    for a, b in runs.values():
        assert a == b
    assert len({tuple(a) for a, _ in runs.values()}) > 1  # the task's first token is a random choice


@pytest.mark.parametrize("engine", ["llama", "hf"])
def test_stop_sequences(engine, request):
    server = request.getfixturevalue(engine)
    free = completion(server, prompt=PROMPT, max_tokens=20, seed=6, extra_body=TRACE)["choices"][0]
    assert " ->" in free["text"]
    out = completion(server, prompt=PROMPT, max_tokens=20, seed=6, stop=[" ->", "zzz"], extra_body=TRACE)["choices"][0]
    assert out["text"] == free["text"][: free["text"].index(" ->")]
    assert out["finish_reason"] == "stop" and out["autodeco"]["finish_reason"] == "stop"
    assert token_ids(out) == token_ids(free)[: len(token_ids(out))]
    # streamed: the stop string is never sent, not even a part of it
    chunks = stream_completion(server, {"model": MODEL, "prompt": PROMPT, "max_tokens": 20, "seed": 6,
                                        "stop": " ->", "stream": True})
    assert "".join(c["choices"][0]["text"] for c in chunks) == out["text"]


def test_n_choices_use_consecutive_seeds(llama):
    out = completion(llama, prompt=PROMPT, max_tokens=12, seed=20, n=3, extra_body=TRACE)
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    for j, choice in enumerate(out["choices"]):
        one = completion(llama, prompt=PROMPT, max_tokens=12, seed=20 + j, extra_body=TRACE)["choices"][0]
        assert token_ids(choice) == token_ids(one) and choice["text"] == one["text"]
    assert out["usage"]["completion_tokens"] == sum(len(trace_of(c)) for c in out["choices"])


def test_batch_of_prompts(llama, tokenizer):
    """A list of prompts: choice i*n+j is sample j of prompt i (mixing text and ids is refused, as by OpenAI)."""
    other = "pick one of parrot falcon turtle and spell it backwards:"
    prompts = [PROMPT, other]
    out = completion(llama, prompt=prompts, max_tokens=10, seed=30, n=2, extra_body=TRACE)
    assert len(out["choices"]) == 4
    for i, p in enumerate(prompts):
        for j in range(2):
            one = completion(llama, prompt=p, max_tokens=10, seed=30 + j, extra_body=TRACE)
            assert token_ids(out["choices"][i * 2 + j]) == token_ids(one["choices"][0])
    assert out["usage"]["prompt_tokens"] == len(tokenizer(PROMPT)["input_ids"]) + len(tokenizer(other)["input_ids"])
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    by_ids = completion(llama, prompt=ids, max_tokens=10, seed=30, n=2, extra_body=TRACE)
    assert [token_ids(c) for c in by_ids["choices"]] == [token_ids(c) for c in out["choices"]]
    mixed = llama.post("/v1/completions", {"model": MODEL, "prompt": [PROMPT, ids[1]]})
    assert mixed.status_code == 400 and mixed.json()["error"]["param"] == "prompt"
    r = httpx.get(llama.url + "/v1/models/not-this-one")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


# ----------------------------------------------------------------------------- bad requests


BAD = [
    # (raw body or dict, status, words in the message, param)
    (b"{not json", 400, "could not parse the JSON", None),
    (b"[1, 2]", 400, "must be a JSON object", None),
    ({"prompt": "a"}, 400, "Missing required parameter: 'model'", "model"),
    ({"model": MODEL}, 400, "Missing required parameter: 'prompt'", "prompt"),
    ({"model": "gpt-4o", "prompt": "a"}, 404, "does not exist", "model"),
    ({"model": MODEL, "prompt": "a", "max_tokens": "5"}, 400, "Invalid type for 'max_tokens'", "max_tokens"),
    ({"model": MODEL, "prompt": "a", "max_tokens": 0}, 400, "greater than or equal to 1", "max_tokens"),
    ({"model": MODEL, "prompt": "a", "temperature": -0.5}, 400, "greater than or equal to 0", "temperature"),
    (b'{"model": "tiny-chat", "prompt": "a", "temperature": NaN}', 400, "finite number", "temperature"),
    (b'{"model": "tiny-chat", "prompt": "a", "top_p": Infinity}', 400, "finite number", "top_p"),
    ({"model": MODEL, "prompt": "a", "stream": "yes"}, 400, "Invalid type for 'stream'", "stream"),
    ({"model": MODEL, "prompt": 42}, 400, "Invalid type for 'prompt'", "prompt"),
    ({"model": MODEL, "prompt": [1, 99999]}, 400, "outside the vocabulary", "prompt"),
    ({"model": MODEL, "prompt": "a", "top_k": 5}, 400, "Unrecognized request argument supplied: top_k", "top_k"),
    ({"model": MODEL, "prompt": "a", "seed": 1.5}, 400, "Invalid type for 'seed'", "seed"),
    ({"model": MODEL, "prompt": "a", "n": 99}, 400, "less than or equal to 16", "n"),
    ({"model": MODEL, "prompt": "a", "logprobs": -1}, 400, "greater than or equal to 0", "logprobs"),
    ({"model": MODEL, "prompt": "a", "frequency_penalty": 0.5}, 400, "not supported", None),
    ({"model": MODEL, "prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4", None),
    ({"model": MODEL, "prompt": "a", "autodeco": {"trace": True, "x": 1}}, 400, "Unrecognized", "autodeco.x"),
    ({"model": MODEL, "prompt": "badger " * 600}, 400, "maximum context length is 512", "prompt"),
]


def test_each_bad_request_is_refused_and_the_server_keeps_serving(llama):
    for body, status, words, param in BAD:
        raw = body if isinstance(body, bytes) else None
        r = llama.post("/v1/completions", None if raw else body, raw=raw)
        assert r.status_code == status, (body, r.text)
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert words in err["message"], (body, err)
        assert err["param"] == param, (body, err)
        assert err["type"] == "invalid_request_error"
        assert llama.alive()
    # chat-specific ones
    chat_bad = [
        ({"model": MODEL, "messages": []}, "at least 1"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, "Invalid type for 'messages[0].content'"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "needs 'logprobs'"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "not supported"),
    ]
    for body, words in chat_bad:
        r = llama.post("/v1/chat/completions", body)
        assert r.status_code == 400, (body, r.text)
        assert words in r.json()["error"]["message"], r.text
    r = httpx.get(llama.url + "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    # the openai client maps the shapes to its exceptions
    with pytest.raises(openai.NotFoundError) as nf:
        llama.client().completions.create(model="no-such-model", prompt="x")
    assert nf.value.status_code == 404
    with pytest.raises(openai.BadRequestError):
        llama.client().completions.create(model=MODEL, prompt="x", max_tokens=-3)
    assert completion(llama, prompt=PROMPT, max_tokens=4, seed=0)["choices"][0]["text"]
    assert llama.health()["failed"] == 0


# ----------------------------------------------------------------------------- concurrency


def test_fifty_concurrent_requests_match_one_at_a_time(llama):
    """50 requests at once, mixed multipliers and streaming: none lost, each one's tokens equal
    what the same seed gives alone."""
    temps, tops = (0.0, 0.5, 1.0, 1.5), (0.5, 1.0, 1.5)
    jobs = [dict(seed=i, temperature=temps[i % 4], top_p=tops[i % 3], stream=bool(i % 2)) for i in range(50)]

    def body(j):
        return {"model": MODEL, "prompt": PROMPT, "max_tokens": 24, "seed": j["seed"],
                "temperature": j["temperature"], "top_p": j["top_p"], **TRACE}

    alone = []
    for j in jobs:
        choice = llama.post("/v1/completions", body(j)).json()["choices"][0]
        alone.append((token_ids(choice), choice["text"]))

    async def one(client, j):
        if not j["stream"]:
            r = await client.post("/v1/completions", json=body(j))
            choice = r.json()["choices"][0]
            return token_ids(choice), choice["text"]
        ids, text = [], ""
        async with client.stream("POST", "/v1/completions", json={**body(j), "stream": True}) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    c = json.loads(line[6:])["choices"][0]
                    ids += [s["token_id"] for s in c["autodeco"]["trace"]]
                    text += c["text"]
        return ids, text

    async def all_at_once():
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=llama.url, timeout=300, limits=limits) as client:
            return await asyncio.gather(*(one(client, j) for j in jobs))

    start = time.monotonic()
    together = asyncio.run(all_at_once())
    assert time.monotonic() - start < 240
    assert len(together) == 50
    for j, got, want in zip(jobs, together, alone):
        assert got == want, j
    h = llama.wait_idle()
    assert h["refused"] == 0 and h["queued"] == 0 and h["running"] == 0


def _open_stream(server, body):
    """Open a streamed completion and read its first data line; returns (client, response)."""
    client = httpx.Client(timeout=120)
    request = client.build_request("POST", server.url + "/v1/completions", json={**body, "stream": True})
    response = client.send(request, stream=True)
    assert response.status_code == 200
    return client, response


LONG = {"model": "random", "prompt": "The quick brown fox", "max_tokens": 4000, "n": 16, "seed": 1}


def test_queue_full_gives_503_then_recovers(busy):
    before = busy.health()
    a_client, a = _open_stream(busy, LONG)
    lines = a.iter_lines()
    assert next(line for line in lines if line.startswith("data: "))  # A runs
    b_client, b = _open_stream(busy, LONG)  # B waits in the queue (its headers came back)
    h = busy.health()
    assert h["running"] == 1 and h["queued"] == 1
    r = busy.post("/v1/completions", {"model": "random", "prompt": "x", "max_tokens": 2})
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "server_busy" and r.headers["retry-after"] == "1"
    with pytest.raises(openai.InternalServerError):
        busy.client().completions.create(model="random", prompt="x", max_tokens=2)
    for resp, client in ((b, b_client), (a, a_client)):  # both clients go away
        resp.close()
        client.close()
    h = busy.wait_idle()
    assert h["running"] == 0 and h["queued"] == 0
    assert h["cancelled"] - before["cancelled"] == 2 and h["refused"] - before["refused"] == 2
    out = busy.client().completions.create(model="random", prompt="x", max_tokens=3, seed=0)
    assert out.usage.completion_tokens >= 1


def test_client_dropping_a_stream_frees_its_slot(busy):
    before = busy.health()
    client, resp = _open_stream(busy, LONG)
    seen = 0
    for line in resp.iter_lines():
        if line.startswith("data: "):
            seen += 1
            if seen == 3:
                break
    resp.close()
    client.close()
    h = busy.wait_idle(timeout=20)
    assert h["running"] == 0 and h["cancelled"] == before["cancelled"] + 1
    assert h["served"] == before["served"]  # it was stopped, not finished
    for seed in range(3):  # the engine serves the next ones
        out = busy.client().completions.create(model="random", prompt="x", max_tokens=5, seed=seed)
        assert out.choices[0].finish_reason in ("stop", "length")
    # a client that gives up on a plain (not streamed) request frees the engine as well
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(busy.url + "/v1/completions", json=LONG, timeout=httpx.Timeout(30, read=1.0))
    h = busy.wait_idle(timeout=20)
    assert h["running"] == 0 and h["cancelled"] == before["cancelled"] + 2


def _random_server(*extra):
    from _llama_util import assets as llama_assets

    a = llama_assets()
    return Server(["--engine", "llama-cpp", "--model", str(a["gguf_f32"]), "--heads", str(a["heads_gguf"]),
                   "--model-name", "random", "--threads", "1", "--n-ctx", "4096", *extra])


def test_sigterm_past_the_deadline_ends_streams_cleanly():
    """SIGTERM with a deadline of 0 s: the running stream is ended at its next token with a
    finish chunk and [DONE], the waiting one gets a shutting_down error event and [DONE], and
    the process exits with status 0 and stops listening."""
    server = _random_server("--shutdown-timeout", "0")
    try:
        a_client, a_resp = _open_stream(server, LONG)
        b_client, b_resp = _open_stream(server, LONG)  # queued behind A
        lines = a_resp.iter_lines()
        first = [next(line for line in lines if line.startswith("data: ")) for _ in range(3)]
        assert all(json.loads(x[6:])["choices"][0]["finish_reason"] is None for x in first)
        started = time.monotonic()
        server.proc.terminate()  # SIGTERM
        rest = [line[6:] for line in lines if line.startswith("data: ")]
        assert rest[-1] == "[DONE]"
        ends = [json.loads(x)["choices"][0] for x in rest[:-1] if json.loads(x).get("choices")]
        assert any(c["finish_reason"] == "length" for c in ends)  # the running choice was ended, not dropped
        queued = [line[6:] for line in b_resp.iter_lines() if line.startswith("data: ")]
        assert queued[-1] == "[DONE]" and json.loads(queued[0])["error"]["code"] == "shutting_down"
        for resp, client in ((a_resp, a_client), (b_resp, b_client)):
            resp.close()
            client.close()
        assert server.proc.wait(30) == 0, server.stderr()
        assert time.monotonic() - started < 20
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/health", timeout=5)
    finally:
        server.stop()


def test_sigterm_lets_streams_in_flight_finish_within_the_deadline():
    server = _random_server("--shutdown-timeout", "60")
    try:
        body = {"model": "random", "prompt": "The quick brown fox", "max_tokens": 1500, "seed": 3, **TRACE}
        client, resp = _open_stream(server, body)
        lines = resp.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        server.proc.terminate()  # SIGTERM while it streams
        rest = [json.loads(line[6:]) for line in lines if line.startswith("data: ") and line != "data: [DONE]"]
        final = rest[-1]["choices"][0]
        assert final["autodeco"]["finish_reason"] in ("eos", "length")  # its own end, not the shutdown's
        n = 1 + sum(len(c["choices"][0]["autodeco"]["trace"]) for c in rest)
        assert final["autodeco"]["finish_reason"] == "eos" or n == 1500
        resp.close()
        client.close()
        assert server.proc.wait(30) == 0, server.stderr()
    finally:
        server.stop()


# ----------------------------------------------------------------------------- command line


def test_serve_command_line_errors(tmp_path, capsys, assets):
    import socket

    from autodeco_samplers.frontends.cli import main

    gguf, heads = str(assets["gguf"]), str(assets["heads_gguf"])
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = str(holder.getsockname()[1])
    cases = [
        (["--engine", "transformers", "--model", str(assets["folder"]), "--f32-kv-cache"], 2, "applies to --engine llama-cpp only"),
        (["--engine", "transformers", "--model", str(assets["folder"]), "--n-ctx", "64"], 2, "applies to --engine llama-cpp only"),
        (["--engine", "llama-cpp", "--model", gguf], 2, "needs --heads"),
        (["--engine", "llama-cpp", "--model", str(tmp_path / "absent.gguf"), "--heads", heads], 1, "absent.gguf"),
        (["--engine", "llama-cpp", "--model", heads, "--heads", heads], 1, "heads sidecar"),
        (["--engine", "llama-cpp", "--model", gguf, "--heads", heads, "--chat-template", str(tmp_path / "no.jinja")], 1,
         "cannot read the chat template"),
        (["--engine", "llama-cpp", "--model", gguf, "--heads", heads, "--threads", "1", "--port", taken], 1,
         f"cannot listen on 127.0.0.1:{taken}"),
    ]
    try:
        for argv, code, needle in cases:
            assert main(["serve", *argv]) == code, argv
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("autodeco serve: error: ") and needle in err[0], (argv, err)
        with pytest.raises(SystemExit) as exc:
            main(["serve", "--engine", "llama-cpp", "--model", gguf, "--heads", heads, "--port", "70000"])
        assert exc.value.code == 2
    finally:
        holder.close()
