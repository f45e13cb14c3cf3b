// The AutoDeco page: streams an answer from this server's own OpenAI endpoint (SSE, with the
// AutoDeco trace on) and shows, per token, the temperature T and top-p P it was sampled with.
// Plain JavaScript, no libraries; it talks only to the origin that served it.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  // viridis at 0, 1/8, ..., 1 (colour-blind safe, monotone in lightness); T 0..2 maps onto it
  const VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"];
  const T_MAX = 2;
  const TOP_ALTERNATIVES = 5;

  const state = {
    model: null,
    engine: null,
    chatTemplate: true,
    messages: [],        // the chat so far (chat mode)
    runs: [],            // the runs of the last Generate: AutoDeco, then static and greedy
    controllers: [],
    pinned: null,        // the token element a click or tap pinned
  };

  // --- colours -----------------------------------------------------------------------
  function hexToRgb(hex) {
    const n = parseInt(hex.slice(1), 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }
  const STOPS = VIRIDIS.map(hexToRgb);

  function colourForT(T) {
    const x = Math.min(Math.max(T / T_MAX, 0), 1) * (STOPS.length - 1);
    const i = Math.min(Math.floor(x), STOPS.length - 2);
    const f = x - i;
    return STOPS[i].map((c, k) => Math.round(c + (STOPS[i + 1][k] - c) * f));
  }

  function luminance(rgb) {
    const lin = rgb.map((c) => {
      const s = c / 255;
      return s <= 0.03928 ? s / 12.92 : Math.pow((s + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
  }

  // black or white text, whichever contrasts more with the background
  function textColourFor(rgb) {
    const L = luminance(rgb);
    return (L + 0.05) / 0.05 >= 1.05 / (L + 0.05) ? "#000000" : "#ffffff";
  }

  // --- numbers ------------------------------------------------------------------------
  const fmt = (x) => (typeof x === "number" && isFinite(x) ? x.toFixed(4) : "n/a");
  const fmt2 = (x) => Number(x).toFixed(2);

  function probabilityText(tok) {
    if (tok.logprob === null || tok.logprob === undefined) {
      return tok.end ? "not listed (end-of-generation token)" : "n/a";
    }
    return fmt(Math.exp(tok.logprob));
  }

  function tokenLabel(tok) {
    if (tok.end) return "\u27e8end\u27e9";
    if (tok.text === "") return "\u2205";
    return tok.text;
  }

  // --- the server ---------------------------------------------------------------------
  async function readError(resp) {
    let detail = "";
    try {
      const body = await resp.json();
      if (body && body.error) return describeError(body.error, resp.status);
      detail = JSON.stringify(body);
    } catch (e) {
      detail = resp.statusText;
    }
    return `The server answered ${resp.status}: ${detail}`;
  }

  function describeError(err, status) {
    const parts = [];
    parts.push(status ? `The server refused the request (${status}${err.code ? ", " + err.code : ""}):` :
      `The server reported an error${err.code ? " (" + err.code + ")" : ""}:`);
    parts.push(err.message || "no message");
    if (err.param) parts.push(`(field: ${err.param})`);
    return parts.join(" ");
  }

  async function loadModel() {
    try {
      const resp = await fetch("/v1/models", { headers: { Accept: "application/json" } });
      if (!resp.ok) throw new Error(await readError(resp));
      const models = await resp.json();
      const card = models.data[0];
      state.model = card.id;
      const info = card.autodeco || {};
      state.engine = info.engine || null;
      state.chatTemplate = info.chat_template !== false;
      const bits = [`model ${card.id}`];
      if (info.engine) bits.push(`engine ${info.engine}`);
      if (info.n_ctx) bits.push(`context ${info.n_ctx} tokens`);
      $("model-info").textContent = bits.join(" \u00b7 ");
      if (!state.chatTemplate) {
        const note = $("chat-note");
        note.hidden = false;
        note.textContent = "This model has no chat template: the server will refuse chat (use Completion, " +
          "or start the server with --chat-template FILE).";
      }
      document.body.dataset.state = "ready";
    } catch (e) {
      showError(`Could not read the served model: ${e.message}`);
      document.body.dataset.state = "error";
    }
  }

  // Server-sent events over fetch(): calls onEvent(obj) per data payload, until [DONE].
  async function streamRequest(path, body, signal, onEvent) {
    const resp = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal,
    });
    if (!resp.ok) throw new ServerError(await readError(resp));
    const reader = resp.body.getReader();
    const decoder = new TextDecoder("utf-8");
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        const obj = JSON.parse(data);
        if (obj.error) throw new ServerError(describeError(obj.error, 0));
        onEvent(obj);
      }
    }
    throw new ServerError("The stream ended before the server sent [DONE].");
  }

  class ServerError extends Error {}

  // --- requests -----------------------------------------------------------------------
  function numberField(id) {
    const raw = $(id).value.trim();
    if (raw === "") return null;
    const n = Number(raw);
    return Number.isFinite(n) ? n : raw;  // a non-number goes to the server, which names the problem
  }

  function baseBody(mode, promptText) {
    const body = { model: state.model, stream: true, stream_options: { include_usage: true } };
    if (mode === "chat") {
      body.messages = state.messages.concat([{ role: "user", content: promptText }]);
      body.logprobs = true;
      body.top_logprobs = TOP_ALTERNATIVES;
    } else {
      body.prompt = promptText;
      body.logprobs = TOP_ALTERNATIVES;
    }
    const maxTokens = numberField("max-tokens");
    if (maxTokens !== null) body.max_tokens = maxTokens;
    const seed = numberField("seed");
    if (seed !== null) body.seed = seed;
    return body;
  }

  function runSpecs(mode, promptText) {
    const temperature = Number($("temperature").value);
    const topP = Number($("top-p").value);
    const specs = [];
    const auto = baseBody(mode, promptText);
    auto.temperature = temperature;
    auto.top_p = topP;
    auto.autodeco = { trace: true };
    specs.push({ kind: "autodeco", title: "AutoDeco",
      sub: `heads' T and P \u00d7 temperature ${fmt2(temperature)}, top_p ${fmt2(topP)}`, body: auto });
    if ($("compare").checked) {
      const T = Number($("static-t").value);
      const P = Number($("static-p").value);
      const fixed = baseBody(mode, promptText);
      fixed.autodeco = { trace: true, fixed_temperature: T, fixed_top_p: P };
      specs.push({ kind: "static", title: "Static", sub: `T ${fmt2(T)}, P ${fmt2(P)} for every token`, body: fixed });
      const greedy = baseBody(mode, promptText);
      greedy.temperature = 0;
      greedy.autodeco = { trace: true };
      specs.push({ kind: "greedy", title: "Greedy", sub: "temperature 0: the most likely token", body: greedy });
    }
    return specs;
  }

  // --- one run: its panel, its tokens ----------------------------------------------------
  function makeRunPanel(run) {
    const art = document.createElement("article");
    art.className = "run";
    art.id = `run-${run.kind}`;
    art.dataset.kind = run.kind;
    const h = document.createElement("h3");
    h.textContent = run.title + " ";
    const sub = document.createElement("span");
    sub.className = "sub";
    sub.textContent = run.sub;
    h.appendChild(sub);
    const status = document.createElement("p");
    status.className = "status";
    status.setAttribute("aria-live", "polite");
    status.textContent = "waiting for the server\u2026";
    const tokens = document.createElement("div");
    tokens.className = "tokens";
    tokens.setAttribute("role", "group");
    tokens.setAttribute("aria-label", `${run.title} answer: tokens coloured by T (arrow keys move between tokens)`);
    const fig = document.createElement("figure");
    fig.className = "chart";
    art.append(h, status, tokens, fig);
    run.el = { panel: art, status, tokens, chart: fig };
    return art;
  }

  function addTokens(run, chunkChoice, chat) {
    const trace = (chunkChoice.autodeco && chunkChoice.autodeco.trace) || [];
    const released = chat ? ((chunkChoice.delta && chunkChoice.delta.content) || "") : (chunkChoice.text || "");
    run.text += released;
    if (!trace.length) return;
    // log-probabilities list every token but an end-of-generation one, which can only be last
    let listed = [];
    const lp = chunkChoice.logprobs;
    if (lp && chat && Array.isArray(lp.content)) {
      listed = lp.content.map((c) => ({ text: c.token, logprob: c.logprob,
        top: (c.top_logprobs || []).map((t) => [t.token, t.logprob]) }));
    } else if (lp && !chat && Array.isArray(lp.tokens)) {
      listed = lp.tokens.map((t, i) => ({ text: t, logprob: lp.token_logprobs[i],
        top: Object.entries((lp.top_logprobs || [])[i] || {}) }));
    }
    trace.forEach((step, k) => {
      const info = listed[k];
      const tok = {
        index: run.tokens.length,
        token_id: step.token_id, T_pred: step.T_pred, P_pred: step.P_pred, T: step.T, P: step.P,
        text: info ? info.text : (trace.length === 1 ? released : ""),
        logprob: info ? info.logprob : null,
        top: info ? info.top : [],
        end: !info,
      };
      run.tokens.push(tok);
      run.el.tokens.appendChild(tokenElement(run, tok));
    });
    fixRovingTabindex(run);
    scheduleChart(run);
  }

  function tokenElement(run, tok) {
    const span = document.createElement("span");
    span.className = tok.end ? "tok end" : "tok";
    span.textContent = tokenLabel(tok);
    const rgb = colourForT(tok.T);
    span.style.backgroundColor = `rgb(${rgb.join(",")})`;
    span.style.color = textColourFor(rgb);
    span.dataset.i = String(tok.index);
    span.dataset.run = run.kind;
    span.dataset.t = fmt2(tok.T);
    span.tabIndex = -1;
    span.setAttribute("aria-label", `token ${tok.index + 1}: ${JSON.stringify(tokenLabel(tok))}, T ${fmt2(tok.T)}, P ${fmt2(tok.P)}`);
    return span;
  }

  function fixRovingTabindex(run) {
    const spans = run.el.tokens.querySelectorAll(".tok");
    if (!spans.length) return;
    if (!run.el.tokens.querySelector('.tok[tabindex="0"]')) spans[0].tabIndex = 0;
  }

  // --- the chart --------------------------------------------------------------------------
  function scheduleChart(run) {
    if (run.chartPending) return;
    run.chartPending = true;
    requestAnimationFrame(() => {
      run.chartPending = false;
      drawChart(run);
    });
  }

  function drawChart(run, active) {
    const toks = run.tokens;
    const n = toks.length;
    if (!n) { run.el.chart.textContent = ""; return; }
    // drawn at the figure's own width, so that its text keeps its size in a narrow column
    const W = Math.max(240, Math.floor(run.el.chart.clientWidth) || 600), H = 150, L = 34, R = 10, TOP = 10, B = 24;
    const maxT = Math.max(1, ...toks.map((t) => t.T), ...toks.map((t) => t.P));
    const yMax = Math.ceil(maxT * 2) / 2;
    const x = (i) => (n === 1 ? L + (W - L - R) / 2 : L + (i * (W - L - R)) / (n - 1));
    const y = (v) => TOP + (1 - Math.min(v, yMax) / yMax) * (H - TOP - B);
    const parts = [];
    for (let v = 0; v <= yMax + 1e-9; v += 0.5) {
      parts.push(`<line class="grid" x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}"/>`);
      parts.push(`<text x="${L - 5}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(1)}</text>`);
    }
    parts.push(`<line class="axis" x1="${L}" x2="${L}" y1="${TOP}" y2="${H - B}"/>`);
    parts.push(`<line class="axis" x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}"/>`);
    parts.push(`<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">token 1 \u2013 ${n}</text>`);
    if (active !== undefined && active !== null && active < n) {
      parts.push(`<line class="cursor" x1="${x(active)}" x2="${x(active)}" y1="${TOP}" y2="${H - B}"/>`);
    }
    const tPts = toks.map((t, i) => `${x(i).toFixed(1)},${y(t.T).toFixed(1)}`).join(" ");
    const pPts = toks.map((t, i) => `${x(i).toFixed(1)},${y(t.P).toFixed(1)}`).join(" ");
    parts.push(`<polyline class="t-line" points="${tPts}"/>`);
    parts.push(`<polyline class="p-line" points="${pPts}"/>`);
    if (n <= 120) {
      toks.forEach((t, i) => {
        parts.push(`<circle class="t-dot" cx="${x(i).toFixed(1)}" cy="${y(t.T).toFixed(1)}" r="2.6"/>`);
        parts.push(`<rect class="p-dot" x="${(x(i) - 2.4).toFixed(1)}" y="${(y(t.P) - 2.4).toFixed(1)}" width="4.8" height="4.8"/>`);
      });
    }
    const Ts = toks.map((t) => t.T), Ps = toks.map((t) => t.P);
    const label = `T and P along the ${run.title} answer, ${n} tokens: T from ${fmt2(Math.min(...Ts))} to ` +
      `${fmt2(Math.max(...Ts))}, P from ${fmt2(Math.min(...Ps))} to ${fmt2(Math.max(...Ps))}`;
    // the key (a solid line with dots for T, a dashed line with squares for P: not colour alone)
    const key = '<figcaption><span class="key key-t" aria-hidden="true"></span> T used ' +
      '<span class="key key-p" aria-hidden="true"></span> P used, along the answer</figcaption>';
    run.el.chart.innerHTML = `<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${label}">` +
      `${parts.join("")}</svg>${key}`;
  }

  // --- token details: hover, focus, tap -----------------------------------------------------
  function runOf(span) {
    return state.runs.find((r) => r.kind === span.dataset.run);
  }

  function showTip(span) {
    const run = runOf(span);
    if (!run) return;
    const tok = run.tokens[Number(span.dataset.i)];
    const tip = $("tip");
    tip.textContent = "";
    const head = document.createElement("p");
    head.className = "tip-head";
    head.textContent = `${run.title}, token ${tok.index + 1} of ${run.tokens.length}: ` +
      `${tok.end ? "end of generation" : JSON.stringify(tok.text)} (id ${tok.token_id})`;
    const dl = document.createElement("dl");
    const rows = [["T_pred", tok.T_pred], ["T", tok.T], ["P_pred", tok.P_pred], ["P", tok.P]];
    for (const [name, value] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.dataset.field = name;
      dd.textContent = fmt(value);
      dl.append(dt, dd);
    }
    const dt = document.createElement("dt");
    dt.textContent = "probability";
    const dd = document.createElement("dd");
    dd.dataset.field = "probability";
    dd.style.gridColumn = "span 3";
    dd.textContent = probabilityText(tok);
    dl.append(dt, dd);
    tip.append(head, dl);
    if (tok.top && tok.top.length) {
      const alts = document.createElement("p");
      alts.className = "alts";
      alts.textContent = "most likely: " + tok.top.map(([t, lp]) => `${JSON.stringify(t)} ${Math.exp(lp).toFixed(3)}`).join(", ");
      tip.appendChild(alts);
    }
    tip.dataset.run = run.kind;
    tip.dataset.i = String(tok.index);
    tip.hidden = false;
    placeTip(span);
    document.querySelectorAll(".tok.active").forEach((el) => el.classList.remove("active"));
    span.classList.add("active");
    drawChart(run, tok.index);
  }

  function placeTip(span) {
    const tip = $("tip");
    const r = span.getBoundingClientRect();
    const width = tip.offsetWidth;
    const left = Math.max(4, Math.min(r.left, document.documentElement.clientWidth - width - 4));
    tip.style.left = `${left + window.scrollX}px`;
    tip.style.top = `${r.bottom + window.scrollY + 6}px`;
  }

  function hideTip(force) {
    if (state.pinned && !force) return;
    const tip = $("tip");
    if (tip.hidden) return;
    tip.hidden = true;
    const run = state.runs.find((r) => r.kind === tip.dataset.run);
    document.querySelectorAll(".tok.active").forEach((el) => el.classList.remove("active"));
    if (run) drawChart(run);
  }

  function bindTokenEvents() {
    const runs = $("runs");
    runs.addEventListener("mouseover", (e) => {
      const span = e.target.closest(".tok");
      if (span && !state.pinned) showTip(span);
    });
    runs.addEventListener("mouseout", (e) => {
      const span = e.target.closest(".tok");
      if (span && !span.contains(e.relatedTarget) && document.activeElement !== span) hideTip(false);
    });
    runs.addEventListener("click", (e) => {
      const span = e.target.closest(".tok");
      if (!span) return;
      state.pinned = state.pinned === span ? null : span;  // a tap pins the details, a second tap unpins
      showTip(span);
      span.focus({ preventScroll: true });
    });
    runs.addEventListener("focusin", (e) => {
      const span = e.target.closest(".tok");
      if (!span) return;
      const group = span.parentElement;
      group.querySelectorAll('.tok[tabindex="0"]').forEach((el) => { if (el !== span) el.tabIndex = -1; });
      span.tabIndex = 0;
      if (state.pinned && state.pinned !== span) state.pinned = null;
      showTip(span);
    });
    runs.addEventListener("focusout", (e) => {
      const span = e.target.closest(".tok");
      if (span && !(e.relatedTarget && e.relatedTarget.closest && e.relatedTarget.closest(".tok"))) {
        state.pinned = null;
        hideTip(true);
      }
    });
    runs.addEventListener("keydown", (e) => {
      const span = e.target.closest(".tok");
      if (!span) return;
      const spans = Array.from(span.parentElement.querySelectorAll(".tok"));
      const i = spans.indexOf(span);
      let next = null;
      if (e.key === "ArrowRight" || e.key === "ArrowDown") next = spans[Math.min(i + 1, spans.length - 1)];
      else if (e.key === "ArrowLeft" || e.key === "ArrowUp") next = spans[Math.max(i - 1, 0)];
      else if (e.key === "Home") next = spans[0];
      else if (e.key === "End") next = spans[spans.length - 1];
      else if (e.key === "Escape") { state.pinned = null; hideTip(true); return; }
      if (next) {
        e.preventDefault();
        next.focus();
      }
    });
    document.addEventListener("click", (e) => {
      if (!e.target.closest(".tok") && !e.target.closest("#tip")) { state.pinned = null; hideTip(true); }
    });
    window.addEventListener("resize", () => {
      const active = document.querySelector(".tok.active");
      if (active && !$("tip").hidden) placeTip(active);
      state.runs.forEach(scheduleChart);
    });
  }

  // --- the trace as JSON ------------------------------------------------------------------
  function traceDocument() {
    return {
      model: state.model,
      engine: state.engine,
      runs: state.runs.map((r) => ({
        kind: r.kind,
        endpoint: r.path,
        request: r.body,
        text: r.text,
        finish_reason: r.finish,
        autodeco_finish_reason: r.autodecoFinish,
        usage: r.usage,
        error: r.error,
        trace: r.tokens.map((t) => ({
          token_id: t.token_id, T_pred: t.T_pred, P_pred: t.P_pred, T: t.T, P: t.P,
          text: t.end ? null : t.text, logprob: t.logprob,
        })),
      })),
    };
  }

  function refreshTraceJson() {
    const text = JSON.stringify(traceDocument(), null, 2);
    $("trace-json").textContent = text;
    const any = state.runs.some((r) => r.tokens.length);
    $("copy").disabled = !any;
    $("download").disabled = !any;
    return text;
  }

  async function copyTrace() {
    const text = refreshTraceJson();
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch (e) {
      const range = document.createRange();
      range.selectNodeContents($("trace-json"));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      try { ok = document.execCommand("copy"); } catch (e2) { ok = false; }
      sel.removeAllRanges();
    }
    $("copy-status").textContent = ok ? "Copied the trace JSON." : "Could not copy: open \u201cTrace JSON\u201d below and copy it from there.";
  }

  function downloadTrace() {
    const text = refreshTraceJson();
    const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = "autodeco-trace.json";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
    $("copy-status").textContent = "Saved autodeco-trace.json.";
  }

  // --- errors -----------------------------------------------------------------------------
  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  // --- Generate -----------------------------------------------------------------------------
  function mode() {
    return document.querySelector('input[name="mode"]:checked').value;
  }

  async function execute(run, chat) {
    const controller = new AbortController();
    state.controllers.push(controller);
    try {
      await streamRequest(run.path, run.body, controller.signal, (obj) => {
        if (obj.usage) run.usage = obj.usage;
        for (const choice of obj.choices || []) {
          if (choice.index !== 0) continue;
          addTokens(run, choice, chat);
          if (choice.finish_reason) run.finish = choice.finish_reason;
          if (choice.autodeco && choice.autodeco.finish_reason) run.autodecoFinish = choice.autodeco.finish_reason;
        }
        run.el.status.textContent = `streaming\u2026 ${run.tokens.length} tokens`;
      });
      const usage = run.usage ? `, usage: ${run.usage.completion_tokens} completion tokens` : "";
      run.el.status.textContent = `${run.tokens.length} tokens, finish_reason ${run.finish || "?"}${usage}`;
      run.el.panel.dataset.done = "true";
    } catch (e) {
      let message;
      if (e.name === "AbortError") message = "Stopped.";
      else if (e instanceof ServerError) message = e.message;
      else message = `Could not reach the server (${e.message}). Is autodeco serve still running?`;
      run.error = message;
      run.stopped = e.name === "AbortError";
      run.el.status.textContent = "";
      const p = document.createElement("p");
      p.className = "run-error";
      p.textContent = message;
      run.el.panel.insertBefore(p, run.el.tokens);
      run.el.panel.dataset.done = "error";
      if (e.name !== "AbortError") showError(`${run.title}: ${message}`);
    } finally {
      drawChart(run);
      refreshTraceJson();
    }
  }

  async function generate(ev) {
    if (ev) ev.preventDefault();
    if (!state.model) { showError("The page has not read the served model yet; is the server running?"); return; }
    const promptText = $("prompt").value;
    const m = mode();
    const chat = m === "chat";
    clearError();
    hideTip(true);
    state.pinned = null;
    const runsEl = $("runs");
    runsEl.textContent = "";
    const path = chat ? "/v1/chat/completions" : "/v1/completions";
    state.runs = runSpecs(m, promptText).map((s) => ({ ...s, path, tokens: [], text: "", usage: null, finish: null,
      autodecoFinish: null, error: null }));
    runsEl.classList.toggle("compare", state.runs.length > 1);
    state.runs.forEach((r) => runsEl.appendChild(makeRunPanel(r)));
    // one column (a phone): the answer is below the form, so bring it into view
    if (window.matchMedia("(max-width: 52rem)").matches) $("output-h").scrollIntoView({ block: "start" });
    document.body.dataset.state = "running";
    $("send").disabled = true;
    $("stop").disabled = false;
    state.controllers = [];
    await Promise.all(state.runs.map((r) => execute(r, chat)));
    $("send").disabled = false;
    $("stop").disabled = true;
    const main = state.runs[0];
    if (chat && !main.error) {
      state.messages.push({ role: "user", content: promptText }, { role: "assistant", content: main.text });
      $("prompt").value = "";
      renderHistory();
    }
    document.body.dataset.state = state.runs.some((r) => r.error && !r.stopped) ? "error" : "done";
  }

  function renderHistory() {
    const box = $("history");
    box.textContent = "";
    for (const msg of state.messages) {
      const p = document.createElement("p");
      const role = document.createElement("span");
      role.className = "role";
      role.textContent = `${msg.role}: `;
      p.append(role, document.createTextNode(msg.content));
      box.appendChild(p);
    }
    const chat = mode() === "chat";
    box.hidden = !chat || !state.messages.length;
    $("new-chat").hidden = !chat;
    $("prompt-label").textContent = chat ? "Your message" : "Prompt";
  }

  function bindControls() {
    $("form").addEventListener("submit", generate);
    $("prompt").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate(e);
    });
    $("stop").addEventListener("click", () => state.controllers.forEach((c) => c.abort()));
    $("new-chat").addEventListener("click", () => { state.messages = []; renderHistory(); $("prompt").focus(); });
    document.querySelectorAll('input[name="mode"]').forEach((r) => r.addEventListener("change", renderHistory));
    for (const [id, out] of [["temperature", "temperature-out"], ["top-p", "top-p-out"], ["static-t", "static-t-out"],
      ["static-p", "static-p-out"]]) {
      const sync = () => { $(out).textContent = fmt2($(id).value); };
      $(id).addEventListener("input", sync);
      sync();
    }
    $("show-values").addEventListener("change", (e) => document.body.classList.toggle("show-values", e.target.checked));
    $("copy").addEventListener("click", copyTrace);
    $("download").addEventListener("click", downloadTrace);
  }

  document.addEventListener("DOMContentLoaded", () => {
    bindControls();
    bindTokenEvents();
    renderHistory();
    loadModel();
  });
})();
