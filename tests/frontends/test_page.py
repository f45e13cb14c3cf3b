"""The page ``autodeco serve`` answers at ``GET /``, tested in a real browser.

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by selenium) opens the
page of a real ``autodeco serve`` (the embedded tiny model with a chat template, on the llama.cpp
and the transformers engine), types a prompt, waits for the stream to end, and checks what a
user sees against what the server says:

* one coloured token per completion token the server reported (``usage``), each coloured by its
  T on the page's viridis scale, and the page's trace equal to the server's own (non-streamed)
  answer for the same request and seed;
* hovering a token shows that token's T_pred, T, P_pred, P and probability; Tab reaches the
  answer and the arrow keys move between tokens (focus shows the same details); the trace
  downloads as the JSON the page shows;
* the compare view: a static T/P run (every token's T and P are the chosen ones) and a greedy
  run (T = 0, the server's greedy answer), side by side; at phone width they stack and nothing
  overflows sideways;
* a request the server refuses shows the server's message; every resource the page loaded came
  from the server itself; a screenshot (PNG) is saved under pytest's tmp dir.

Without Chromium, chromedriver or selenium the browser tests skip and say which is missing
(``scripts/test.sh`` installs Chromium where apt-get is available). The shipped files are
checked for URLs outside the server without a browser.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("llama_cpp")
pytest.importorskip("transformers")

from _server_util import MODEL, PROMPT, Server, chat_assets  # noqa: E402

from autodeco_samplers.frontends.server import page as page_module  # noqa: E402

STATIC = Path(page_module.__file__).parent / "static"
CHROMIUM = os.environ.get("AUTODECO_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("AUTODECO_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"]
WAIT_S = 180


# ----------------------------------------------------------------------------- the shipped files

# a URL with a scheme (http:, https:, ws:, ftp:, ...) or protocol-relative (//host), in any file
_URL = re.compile(r"\b[a-z][a-z0-9+.\-]*://|(?:[\"'(=]\s*)//[a-z0-9\-]+\.[a-z]", re.I)
# attributes and CSS that load something: their targets must be this server's own paths
_LOADS = re.compile(r"""(?:\bsrc|\bhref|\baction)\s*=\s*["']([^"']*)["']|(?<![.\w])url\(\s*["']?([^"')]*)|@import\s+["']([^"']+)""", re.I)


def outside_urls(text: str) -> List[str]:
    """What in ``text`` names a place outside the server: URLs with a scheme or a host, and
    loaded targets that are not same-origin paths (``/...``), fragments (``#...``) or ``data:``."""
    found = [m.group(0) for m in _URL.finditer(text)]
    for m in _LOADS.finditer(text):
        target = next(g for g in m.groups() if g is not None).strip()
        if target and not (target.startswith(("/", "#", "data:")) and not target.startswith("//")):
            found.append(target)
    return found


def test_the_url_check_finds_urls():
    """The check below can fail: it finds each way a file could name another server."""
    for bad in ('<script src="https://cdn.example.org/x.js">', "fetch('http://example.com/api')",
                '<link href="//fonts.example.com/a.css">', "@import 'https://x.org/a.css';",
                "background: url(http://x.org/i.png)", '<img src="img.example.org/x.png">', "new WebSocket('ws://h:1')"):
        assert outside_urls(bad), bad
    assert outside_urls('<script src="/static/app.js"></script><a href="#prompt">') == []


def test_shipped_files_name_no_url_outside_the_server():
    shipped = sorted(p.name for p in STATIC.iterdir() if p.is_file())
    assert shipped == sorted(page_module.FILES), "every file in static/ is served, and only those"
    for name in shipped:
        text = (STATIC / name).read_text(encoding="utf-8")
        assert outside_urls(text) == [], f"static/{name} names a place outside the server"
    # the page loads its own script and style from the server, by absolute path
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    assert 'src="/static/app.js"' in html and 'href="/static/style.css"' in html


# ----------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def assets():
    return chat_assets()


def _start(engine: str, assets) -> Server:
    if engine == "llama-cpp":
        args = ["--engine", "llama-cpp", "--model", str(assets["gguf"]), "--heads", str(assets["heads_gguf"]),
                "--f32-kv-cache"]
    else:
        args = ["--engine", "transformers", "--model", str(assets["folder"]), "--heads", str(assets["heads"])]
    return Server(args + ["--model-name", MODEL, "--threads", "1"])


@pytest.fixture(scope="module", params=["llama-cpp", "transformers"])
def server(request, assets):
    srv = _start(request.param, assets)
    yield srv
    assert srv.stop() == 0, srv.stderr()


def test_page_routes(server):
    """``GET /`` is the page; its files are served with their types and a same-origin-only
    Content-Security-Policy; any other name is a 404 in the server's error shape."""
    res = httpx.get(server.url + "/", timeout=30)
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    assert res.content == page_module.read_static("index.html")
    csp = res.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
    for name, media in page_module.FILES.items():
        r = httpx.get(f"{server.url}/static/{name}", timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == media, name
        assert r.content == (STATIC / name).read_bytes()
    for bad in ("/static/page.py", "/static/..%2Fpage.py", "/static/", "/static/app.js.map"):
        r = httpx.get(server.url + bad, timeout=30)
        assert r.status_code == 404, bad
        assert r.json()["error"]["code"] == "not_found"


def test_fixed_temperature_and_top_p(server):
    """``"autodeco": {"fixed_temperature", "fixed_top_p"}`` (the compare view's static run)
    replaces the heads' T and P for every token; the request's multipliers still apply."""
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 8, "seed": 5, "temperature": 0.5,
            "autodeco": {"trace": True, "fixed_temperature": 0.8, "fixed_top_p": 0.9}}
    res = server.post("/v1/completions", body)
    assert res.status_code == 200, res.text
    trace = res.json()["choices"][0]["autodeco"]["trace"]
    assert trace and all(math.isclose(s["T"], 0.4, abs_tol=1e-6) and math.isclose(s["P"], 0.9, abs_tol=1e-6)
                         for s in trace), trace
    assert len({round(s["T_pred"], 6) for s in trace}) > 1  # the heads still predict; only the used T/P are fixed
    for field, value, words in (("fixed_top_p", 1.5, "must lie in [0, 1]"), ("fixed_temperature", -1, ">= 0"),
                                ("fixed_temperature", "0.5", "valid number")):
        res = server.post("/v1/completions", {"model": MODEL, "prompt": PROMPT, "autodeco": {field: value}})
        assert res.status_code == 400, (field, value, res.text)
        err = res.json()["error"]
        assert err["param"] == f"autodeco.{field}", err
        if words != ">= 0":
            assert words in err["message"], err
        else:
            assert "greater than or equal to 0" in err["message"], err


# ----------------------------------------------------------------------------- the browser


def browser_missing() -> Optional[str]:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} is missing: apt-get install -y chromium chromium-driver (scripts/test.sh does it as root)"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = browser_missing()
    if reason:
        pytest.skip(f"no browser: {reason}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="autodeco-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1280,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console: script errors, CSP reports
    log = Path(profile) / "chromedriver.log"
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER, log_output=str(log)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def viridis_rgb(T: float) -> tuple:
    """The page's colour for a token sampled with temperature T (viridis over T in [0, 2])."""
    stops = [tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in VIRIDIS]
    x = min(max(T / 2, 0), 1) * (len(stops) - 1)
    i = min(int(math.floor(x)), len(stops) - 2)
    f = x - i
    # JavaScript's Math.round: half up
    return tuple(int(math.floor(a + (b - a) * f + 0.5)) for a, b in zip(stops[i], stops[i + 1]))


def css_rgb(value: str) -> tuple:
    return tuple(int(v) for v in re.findall(r"\d+", value)[:3])


def wait_state(driver, states, timeout: float = WAIT_S) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.find_element("tag name", "body").get_attribute("data-state") in states)
    return driver.find_element("tag name", "body").get_attribute("data-state")


def open_page(driver, server: Server) -> None:
    driver.get(server.url + "/")
    assert wait_state(driver, ("ready", "error"), 60) == "ready", driver.find_element("id", "error").text


def set_field(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.common.keys import Keys

    el = driver.find_element("id", element_id)
    el.send_keys(Keys.CONTROL, "a")
    el.send_keys(Keys.DELETE)
    el.send_keys(value)


def nudge_slider(driver, element_id: str, steps: int) -> str:
    """Move a range input with the keyboard (steps > 0: right), as a keyboard user would."""
    from selenium.webdriver.common.keys import Keys

    el = driver.find_element("id", element_id)
    key = Keys.ARROW_RIGHT if steps > 0 else Keys.ARROW_LEFT
    for _ in range(abs(steps)):
        el.send_keys(key)
    return driver.find_element("id", f"{element_id}-out").text


def page_trace(driver) -> Dict[str, dict]:
    doc = json.loads(driver.find_element("id", "trace-json").get_attribute("textContent"))
    return {run["kind"]: run for run in doc["runs"]}


def direct_answer(server: Server, run: dict) -> dict:
    """The server's own, non-streamed answer to the request the page sent."""
    body = {k: v for k, v in run["request"].items() if k not in ("stream", "stream_options")}
    res = server.post(run["endpoint"], body)
    assert res.status_code == 200, res.text
    return res.json()


def assert_same_trace(page: list, server: list) -> None:
    """The same tokens with the same T and P (float32 decodes of a reused prompt may differ in
    the last bits between two requests, hence the tolerance)."""
    assert [s["token_id"] for s in page] == [s["token_id"] for s in server]
    for a, b in zip(page, server):
        for f in ("T_pred", "P_pred", "T", "P"):
            assert math.isclose(a[f], b[f], rel_tol=1e-5, abs_tol=1e-7), (f, a, b)


def assert_tokens_match(driver, run: dict, panel: str) -> list:
    """One coloured token per completion token, each coloured by its T; returns the elements."""
    spans = driver.find_elements("css selector", f"#{panel} .tok")
    assert len(spans) == run["usage"]["completion_tokens"] == len(run["trace"]) > 0
    for span, step in zip(spans, run["trace"]):
        assert css_rgb(span.value_of_css_property("background-color")) == viridis_rgb(step["T"]), (span.text, step)
    tab_stops = [s for s in spans if s.get_attribute("tabindex") == "0"]
    assert len(tab_stops) == 1, "one tab stop per answer; the arrow keys move between its tokens"
    return spans


def assert_tip_shows(driver, run: dict, k: int) -> None:
    tip = driver.find_element("id", "tip")
    assert tip.is_displayed()
    step = run["trace"][k]
    shown = {f: tip.find_element("css selector", f'dd[data-field="{f}"]').text for f in ("T_pred", "T", "P_pred", "P")}
    assert shown == {f: f"{step[f]:.4f}" for f in ("T_pred", "T", "P_pred", "P")}, (shown, step)
    prob = tip.find_element("css selector", 'dd[data-field="probability"]').text
    if step["logprob"] is None:
        assert "end-of-generation" in prob
    else:
        assert prob == f"{math.exp(step['logprob']):.4f}"
    assert f"token {k + 1} of {len(run['trace'])}" in tip.text


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["completions", "chat"])
def test_page_in_a_real_browser(browser, server, mode, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser
    d.set_window_size(1280, 1000)
    d.get_log("browser")  # start with an empty console log
    open_page(d, server)
    d.find_element("css selector", f'input[name="mode"][value="{mode}"]').click()
    d.find_element("id", "prompt").send_keys(PROMPT)
    set_field(d, "max-tokens", "24")
    set_field(d, "seed", "3")
    assert nudge_slider(d, "temperature", -2) == "0.90"
    d.find_element("id", "compare").click()
    assert nudge_slider(d, "static-t", 2) == "0.80"
    d.find_element("id", "send").click()
    assert wait_state(d, ("done", "error")) == "done", d.find_element("id", "error").text
    runs = page_trace(d)
    assert set(runs) == {"autodeco", "static", "greedy"}

    # the AutoDeco answer: tokens, colours, and the server's own trace for the same request
    auto = runs["autodeco"]
    assert auto["request"]["temperature"] == 0.9 and auto["request"]["seed"] == 3
    spans = assert_tokens_match(d, auto, "run-autodeco")
    direct = direct_answer(server, auto)
    assert_same_trace(auto["trace"], direct["choices"][0]["autodeco"]["trace"])
    assert direct["usage"]["completion_tokens"] == auto["usage"]["completion_tokens"]
    answer = direct["choices"][0]["message"]["content"] if mode == "chat" else direct["choices"][0]["text"]
    assert auto["text"] == answer
    for s in auto["trace"]:
        assert math.isclose(s["T"], s["T_pred"] * 0.9, rel_tol=1e-5)

    # hover a token: its T_pred, T, P_pred, P and probability
    k = len(spans) // 2
    ActionChains(d).move_to_element(spans[k]).perform()
    assert_tip_shows(d, auto, k)
    # the keyboard: Tab from the control before the answers reaches the answer's first token,
    # the arrow keys move from token to token, and the details follow
    d.execute_script("arguments[0].focus()", d.find_element("id", "show-values"))
    ActionChains(d).send_keys(Keys.TAB).perform()
    assert d.switch_to.active_element == spans[0]
    ActionChains(d).send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT).perform()
    assert d.switch_to.active_element == spans[2]
    assert_tip_shows(d, auto, 2)
    # the chart: one point of T and of P per token
    points = d.find_element("css selector", "#run-autodeco svg polyline.t-line").get_attribute("points").split()
    assert len(points) == len(spans)

    # the compare view: static T/P and greedy, side by side
    static, greedy = runs["static"], runs["greedy"]
    assert_tokens_match(d, static, "run-static")
    assert all(math.isclose(s["T"], 0.8, abs_tol=1e-6) and math.isclose(s["P"], 0.9, abs_tol=1e-6)
               for s in static["trace"])
    assert_tokens_match(d, greedy, "run-greedy")
    assert all(s["T"] == 0 for s in greedy["trace"])
    g = direct_answer(server, greedy)["choices"][0]
    assert greedy["text"] == (g["message"]["content"] if mode == "chat" else g["text"])
    panels = [d.find_element("id", f"run-{kind}").rect for kind in ("autodeco", "static", "greedy")]
    assert panels[0]["x"] < panels[1]["x"] < panels[2]["x"] and len({round(p["y"]) for p in panels}) == 1

    if mode == "chat":
        history = d.find_element("id", "history")
        assert history.is_displayed() and PROMPT in history.text and auto["text"].strip() in history.text

    # the trace JSON downloads as the file the page shows
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    d.find_element("id", "download").click()
    saved = downloads / "autodeco-trace.json"
    WebDriverWait(d, 30).until(lambda _: saved.is_file() and saved.stat().st_size > 0)
    assert {r["kind"]: r for r in json.loads(saved.read_text(encoding="utf-8"))["runs"]} == runs

    # nothing was loaded from anywhere but the server
    names = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert names and all(n.startswith(server.url + "/") for n in names), names

    # no script error and no Content-Security-Policy violation on the console
    severe = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == [], severe

    ActionChains(d).move_to_element(spans[k]).perform()
    shot = tmp_path / f"page_{mode}.png"
    assert d.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


@pytest.mark.slow
def test_page_at_phone_width_and_server_errors(browser, server, tmp_path):
    """At 390 px the layout stacks and nothing overflows sideways; a request the server refuses
    (max_tokens 0) shows the server's own message."""
    d = browser
    d.set_window_size(390, 844)
    try:
        open_page(d, server)
        d.find_element("id", "prompt").send_keys(PROMPT)
        set_field(d, "max-tokens", "0")
        d.find_element("id", "send").click()
        assert wait_state(d, ("done", "error")) == "error"
        err = d.find_element("id", "error")
        assert err.is_displayed()
        assert "400" in err.text and "max_tokens" in err.text and "greater than or equal to 1" in err.text, err.text

        set_field(d, "max-tokens", "12")
        d.find_element("id", "compare").click()
        d.find_element("id", "send").click()
        assert wait_state(d, ("done", "error")) == "done", d.find_element("id", "error").text
        assert not d.find_element("id", "error").is_displayed()
        panels = [d.find_element("id", f"run-{kind}").rect for kind in ("autodeco", "static", "greedy")]
        assert panels[0]["y"] < panels[1]["y"] < panels[2]["y"], "the compare view stacks at phone width"
        overflow = d.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than the phone"
        spans = d.find_elements("css selector", "#run-autodeco .tok")
        spans[0].click()  # a tap shows the details
        assert_tip_shows(d, page_trace(d)["autodeco"], 0)
        tip = d.find_element("id", "tip").rect
        assert tip["x"] >= 0 and tip["x"] + tip["width"] <= 390
        assert d.save_screenshot(str(tmp_path / "page_phone.png"))
    finally:
        d.set_window_size(1280, 1000)
