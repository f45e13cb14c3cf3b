"""Continuous batching in ``autodeco serve`` (``--parallel N``) on both engines, end to end.

Real server subprocesses (the embedded default model with a chat template: GGUF with a float32
KV cache for llama.cpp, the folder for transformers), the ``openai`` client. Eight mixed
requests (completions and chat, prompts of different lengths, greedy and sampled, stop
strings, log-probabilities, streamed and not) are sent at once and each answer is compared
with the same request sent alone to the same server:

* tokens, text and finish reasons are equal;
* T, P and log-probabilities agree to 1e-5 (relative) / 1e-4 (absolute): rows that share a
  decode with others may differ from a solo decode in the last bits (float32 matmuls summed in
  another order by the engine), never more (docs/server.md, "Slots");
* the server really decoded several sequences at once (``/health`` reports
  ``peak_active_sequences`` > 1).

The queue, disconnects and SIGTERM under batching are tests/frontends/test_server.py's (its
servers run with the default ``--parallel 4``).
"""

from __future__ import annotations

import asyncio
import threading

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
pytest.importorskip("llama_cpp")
pytest.importorskip("transformers")

from _server_util import MODEL, PROMPT, Server, chat_assets  # noqa: E402

TRACE = {"autodeco": {"trace": True}}
OTHER = "pick one of parrot falcon turtle and spell it backwards:"

# (kind, prompt or message, max_tokens, seed, temperature, top_p, stop, logprobs, stream)
REQUESTS = [
    ("completion", PROMPT, 24, 1, 1.0, 1.0, None, None, False),
    ("completion", OTHER, 8, 2, 0.0, 1.0, None, 2, True),  # greedy, log-probabilities
    ("chat", PROMPT, 30, 3, 1.5, 1.2, None, None, True),
    ("completion", "badger", 16, 4, 0.7, 0.9, [" ->"], 3, False),  # a stop string, short prompt
    ("chat", OTHER, 12, 5, 0.0, 1.0, ["e"], None, False),  # greedy with a stop string
    ("completion", PROMPT + " maroon", 40, 6, 1.2, 1.0, None, 1, True),
    ("chat", "spell badger backwards", 20, 7, 1.0, 0.5, None, None, False),
    ("completion", OTHER + " " + PROMPT, 10, 8, 1.0, 1.0, ["zz", " -> "], None, True),
]


@pytest.fixture(scope="module")
def assets():
    return chat_assets()


def _llama(assets, *extra):
    return Server(["--engine", "llama-cpp", "--model", str(assets["gguf"]), "--heads", str(assets["heads_gguf"]),
                   "--model-name", MODEL, "--threads", "1", "--f32-kv-cache", *extra])


@pytest.fixture(scope="module")
def llama(assets):
    server = _llama(assets, "--parallel", "4")
    yield server
    assert server.stop() == 0, server.stderr()


@pytest.fixture(scope="module")
def hf(assets):
    server = Server(["--engine", "transformers", "--model", str(assets["folder"]), "--heads", str(assets["heads"]),
                     "--model-name", MODEL, "--threads", "1", "--parallel", "4"])
    yield server
    assert server.stop() == 0, server.stderr()


def _kwargs(req):
    kind, text, max_tokens, seed, temperature, top_p, stop, logprobs, stream = req
    kw = dict(model=MODEL, max_tokens=max_tokens, seed=seed, temperature=temperature, top_p=top_p, extra_body=TRACE)
    if stop is not None:
        kw["stop"] = stop
    if kind == "chat":
        kw["messages"] = [{"role": "user", "content": text}]
        if logprobs is not None:
            kw.update(logprobs=True, top_logprobs=logprobs)
    else:
        kw["prompt"] = text
        if logprobs is not None:
            kw["logprobs"] = logprobs
    return kind, kw, stream


def _result(kind, choice_dicts):
    """``{"ids", "text", "finish", "trace", "logprobs"}`` of one answer, streamed or not."""
    ids, text, trace, lps, finish = [], "", [], [], None
    for c in choice_dicts:
        if kind == "chat":
            text += (c.get("message") or c.get("delta") or {}).get("content") or ""
            content = (c.get("logprobs") or {}).get("content") or []
            lps += [(e["logprob"], sorted(t["logprob"] for t in e["top_logprobs"])) for e in content]
        else:
            text += c.get("text") or ""
            lp = c.get("logprobs")
            if lp:
                lps += [(x, sorted(top.values())) for x, top in zip(lp["token_logprobs"], lp["top_logprobs"])]
        steps = (c.get("autodeco") or {}).get("trace") or []
        trace += steps
        finish = c.get("finish_reason") or finish
    ids = [s["token_id"] for s in trace]
    return {"ids": ids, "text": text, "finish": finish, "trace": trace, "logprobs": lps}


async def _one(client, req):
    kind, kw, stream = _kwargs(req)
    api = client.chat.completions if kind == "chat" else client.completions
    if not stream:
        out = (await api.create(**kw)).model_dump()
        return _result(kind, out["choices"])
    chunks = []
    async for chunk in await api.create(stream=True, **kw):
        chunks += [c for c in chunk.model_dump()["choices"]]
    return _result(kind, chunks)


def _run_all(server, reqs, *, together: bool):
    async def main():
        client = server.async_client()
        try:
            if together:
                return await asyncio.gather(*(_one(client, r) for r in reqs))
            return [await _one(client, r) for r in reqs]
        finally:
            await client.close()

    return asyncio.run(main())


def _compare(alone, together):
    for req, a, b in zip(REQUESTS, alone, together):
        assert b["ids"] == a["ids"], req
        assert b["text"] == a["text"], req
        assert b["finish"] == a["finish"], req
        assert len(b["trace"]) == len(a["trace"]) >= 1
        for x, y in zip(b["trace"], a["trace"]):
            for key in ("T_pred", "P_pred", "T", "P"):
                assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-7), (req, key)
        assert len(b["logprobs"]) == len(a["logprobs"])
        for (lx, tx), (ly, ty) in zip(b["logprobs"], a["logprobs"]):
            assert lx == pytest.approx(ly, abs=1e-4)
            assert tx == pytest.approx(ty, abs=1e-4)
    # the mix is what it claims to be: stop strings cut, greedy, log-probabilities present
    finishes = {r[0]: a["finish"] for r, a in zip(REQUESTS, alone)}
    assert any(a["finish"] == "stop" for a in alone) and finishes
    assert all(a["logprobs"] for r, a in zip(REQUESTS, alone) if r[7] is not None)
    assert all(s["T"] == 0 for r, a in zip(REQUESTS, alone) if r[4] == 0.0 for s in a["trace"])


@pytest.mark.parametrize("engine", ["llama", "hf"])
def test_eight_mixed_concurrent_requests_equal_each_alone(engine, request):
    server = request.getfixturevalue(engine)
    assert server.health()["parallel"] == 4
    alone = _run_all(server, REQUESTS, together=False)
    assert server.health()["peak_active_sequences"] == 1  # each of them really ran alone
    together = _run_all(server, REQUESTS, together=True)
    _compare(alone, together)
    h = server.wait_idle()
    assert h["peak_active_sequences"] > 1, "no two sequences ever decoded together"
    assert h["active_sequences"] == 0 and h["running"] == 0 and h["failed"] == 0


def test_n_choices_decode_side_by_side(llama):
    """``n`` choices of one request take several slots at once and each equals its seed alone."""
    many = llama.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=16, seed=40, n=6,
                                             extra_body=TRACE).model_dump()
    for j, choice in enumerate(many["choices"]):
        one = llama.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=16, seed=40 + j,
                                                extra_body=TRACE).model_dump()["choices"][0]
        assert [s["token_id"] for s in choice["autodeco"]["trace"]] == [s["token_id"] for s in one["autodeco"]["trace"]]
        assert choice["text"] == one["text"]


def test_parallel_one_gives_the_same_answers(assets, llama):
    """``--parallel 1`` (one sequence at a time) answers exactly as a 4-slot server alone."""
    single = _llama(assets, "--parallel", "1")
    try:
        assert single.health()["parallel"] == 1
        one = _run_all(single, REQUESTS[:4], together=True)  # queued one after the other
        four = _run_all(llama, REQUESTS[:4], together=False)
        for a, b in zip(one, four):
            assert a["ids"] == b["ids"] and a["text"] == b["text"] and a["trace"] == b["trace"]
    finally:
        assert single.stop() == 0, single.stderr()


@pytest.mark.parametrize("engine", ["llama-cpp", "transformers"])
def test_a_dropped_stream_leaves_and_its_neighbours_are_unchanged(engine):
    """On a random tiny model (long generations): B runs beside A and C; A's client drops its
    stream after a few tokens (its 3 choices leave), C finishes early. A's slot is freed (``cancelled``), and B's
    tokens still equal B alone (the batch's cache loses rows in the middle of B's run)."""
    from _llama_util import assets as llama_assets

    a = llama_assets()
    if engine == "llama-cpp":
        args = ["--engine", "llama-cpp", "--model", str(a["gguf_f32"]), "--heads", str(a["heads_gguf"]), "--n-ctx", "4096"]
    else:
        args = ["--engine", "transformers", "--model", str(a["model_dir"]), "--heads", str(a["heads_dir"])]
    server = Server([*args, "--model-name", "random", "--threads", "1", "--parallel", "5"])
    try:
        b_body = {"model": "random", "prompt": "The quick brown fox", "max_tokens": 80, "seed": 5, **TRACE}
        alone = server.post("/v1/completions", b_body).json()["choices"][0]
        before = server.health()
        out = {}
        a_client = httpx.Client(timeout=120)
        a_resp = a_client.send(a_client.build_request("POST", server.url + "/v1/completions", json={
            "model": "random", "prompt": "The quick brown fox", "max_tokens": 3500, "n": 3, "seed": 1, "stream": True}),
            stream=True)  # three long choices (one of them, at least, runs until it is dropped)
        lines = a_resp.iter_lines()
        next(line for line in lines if line.startswith("data: "))  # A runs
        b = threading.Thread(target=lambda: out.setdefault("b", server.post("/v1/completions", b_body).json()))
        b.start()
        c = server.post("/v1/completions", {"model": "random", "prompt": "x", "max_tokens": 3, "seed": 2})
        assert c.status_code == 200
        seen = 0
        for line in lines:
            seen += line.startswith("data: ")
            if seen == 5:
                break
        a_resp.close()
        a_client.close()
        b.join(120)
        got = out["b"]["choices"][0]
        assert [s["token_id"] for s in got["autodeco"]["trace"]] == [s["token_id"] for s in alone["autodeco"]["trace"]]
        assert got["text"] == alone["text"]
        h = server.wait_idle()
        assert h["active_sequences"] == 0 and h["cancelled"] == before["cancelled"] + 1, (str(before), str(h), seen)
        assert h["served"] == before["served"] + 2  # B and C
    finally:
        assert server.stop() == 0, server.stderr()
