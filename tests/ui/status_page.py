"""The status page in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium), run by hack/test-ui.sh. Two parts:

  agent UP_DIR       one agent alone (SmolLM2 on llama.cpp) with an API key: the page asks for the
                     key, keeps it in localStorage, then shows the board and its resident model;
                     `GET /` without Accept is still "Ollama is running";
  cluster UP_FILE    the gateway of `hack/testcluster.sh up --boards 3` (UP_FILE holds its output):
                     the page lists the three boards, then shows the model appearing — deployment
                     card, then Ready on its boards — after `kubectl apply` of a ModelDeployment,
                     and a few requests' tokens/s; laid out on a phone's width without sideways
                     scrolling; optionally saves a screenshot (--screenshot PATH).

Both fail on any browser console error (the agent part allows only the 401 of the page's first
poll, before the key is given). Every wait is bounded; progress lines go to stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack" / "py"))
import agentproc  # noqa: E402

WAIT = 120.0
KEY = "ui-test-key"
NS = "default"


def log(msg: str) -> None:
    print(f"[test-ui {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fail(msg: str) -> None:
    log(f"FAIL - {msg}")
    sys.exit(1)


def wait_for(what: str, cond: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            last = cond()
        except WebDriverException:
            last = None  # the page re-rendered under us: ask again
        if last:
            return last
        time.sleep(0.25)
    fail(f"timed out after {timeout:.0f} s waiting for {what}")


def browser(profile: str) -> webdriver.Chrome:
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--no-first-run", "--window-size=1280,1000", f"--user-data-dir={profile}"):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
    d.set_page_load_timeout(30)
    return d


class Console:
    """Every console entry of the page so far (Chromium hands each out once)."""

    def __init__(self, driver: webdriver.Chrome):
        self.driver, self.entries = driver, []

    def errors(self, allowed: Callable[[dict], bool] = lambda e: False) -> list[dict]:
        self.entries += self.driver.get_log("browser")
        return [e for e in self.entries if e["level"] == "SEVERE" and not allowed(e)]


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def cards(d: webdriver.Chrome) -> dict[str, Any]:
    """Board name → state, as rendered now."""
    return {c.get_attribute("data-board"): c.get_attribute("data-state")
            for c in d.find_elements(By.CSS_SELECTOR, "article[data-board]")}


def phone_fits(d: webdriver.Chrome) -> None:
    d.set_window_size(390, 844)
    wide = wait_for("the phone layout", lambda: d.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"))
    if wide[0] > wide[1]:
        fail(f"the page scrolls sideways on a phone: {wide[0]} px wide in a {wide[1]} px window")
    d.set_window_size(1280, 1000)


def agent_part(work: Path) -> None:
    keys = work / "keys"
    keys.write_text(KEY + "\n")
    agent = agentproc.Agent.in_workdir(agentproc.default_agent_bin(), agentproc.default_model_path(), work,
                                       extra_args=["--api-key-file", str(keys)])
    with agent.start():
        url = agent.base_url
        status, body = http_get(url + "/")
        if (status, body) != (200, "Ollama is running"):
            fail(f"GET / without Accept: {status} {body!r}")
        d = browser(str(work / "profile"))
        try:
            console = Console(d)
            d.get(url + "/")
            log(f"agent page at {url}/: waiting for the key form")
            form = wait_for("the API key form", lambda: d.find_element(By.ID, "keyform").is_displayed()
                            and d.find_element(By.ID, "keyform"))
            form.find_element(By.ID, "key").send_keys(KEY)
            form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            wait_for("one board card", lambda: len(cards(d)) == 1)
            # The page re-renders every poll: read texts inside the wait, never keep elements.
            row = wait_for("the resident model Ready", lambda: [
                r.text for r in d.find_elements(By.CSS_SELECTOR, f'tr[data-model="{agentproc.DEFAULT_MODEL}"]')
                if "Ready" in r.text])
            if d.execute_script("return localStorage.getItem('rockchip-llama.key')") != KEY:
                fail("the key is not in localStorage")
            if d.find_element(By.ID, "deployments-section").is_displayed():
                fail("an agent's page shows a deployments section")
            text = d.find_element(By.TAG_NAME, "main").text
            if "[object" in text or "undefined" in text or "NaN" in text:
                fail(f"the page renders a value wrongly: {text!r}")
            d.refresh()
            wait_for("the board again after a reload, with the stored key", lambda: len(cards(d)) == 1)
            phone_fits(d)
            errs = console.errors(lambda e: "/overview" in e["message"] and "401" in e["message"])
            if errs:
                fail(f"console errors: {errs}")
            log(f"ok - agent page: key form, key kept in localStorage, 1 board, {row[0]!r}, no console errors")
        finally:
            d.quit()


def kubectl(*args: str, stdin: str | None = None) -> str:
    p = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        fail(f"kubectl {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


def chat(gw: str, text: str) -> None:
    body = json.dumps({"model": "smollm2", "max_tokens": 24, "temperature": 0,
                       "messages": [{"role": "user", "content": text}]}).encode()
    req = urllib.request.Request(gw + "/v1/chat/completions", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()


def cluster_part(up_file: Path, screenshot: Path | None) -> None:
    up = up_file.read_text().splitlines()
    env = dict(line.split("=", 1) for line in up if "=" in line)
    boards = [ln.split()[1] for ln in up if ln.startswith("BOARD ")]
    gw, origin, origin_dir = env["GATEWAY"], env["ORIGIN"], Path(env["ORIGIN_DIR"])
    sums = dict(reversed(ln.split()) for ln in (origin_dir / "SHA256SUMS").read_text().splitlines())
    gguf = next(n for n in sums if n.endswith(".gguf"))
    with tempfile.TemporaryDirectory(prefix="rockchip-llama-ui-") as profile:
        d = browser(profile)
        try:
            console = Console(d)
            d.get(gw + "/")
            log(f"gateway page at {gw}/: waiting for {len(boards)} boards")
            wait_for(f"{len(boards)} board cards", lambda: sorted(cards(d)) == sorted(boards))
            wait_for("every board Ready", lambda: set(cards(d).values()) == {"Ready"})
            if d.find_elements(By.CSS_SELECTOR, "[data-deployment]"):
                fail("a deployment is listed before any was applied")
            log(f"ok - the page lists the boards {sorted(cards(d))}")

            doc = {"apiVersion": "rockchipllama.io/v1alpha1", "kind": "ModelDeployment",
                   "metadata": {"name": "smollm2", "namespace": NS},
                   "spec": {"model": "smollm2", "format": "gguf", "replicas": 2,
                            "source": {"url": f"{origin}/{gguf}", "sha256": sums[gguf]}}}
            t0 = time.monotonic()
            kubectl("apply", "-f", "-", stdin=json.dumps(doc))
            log("applied ModelDeployment smollm2 (2 replicas)")
            wait_for("the deployment card", lambda: d.find_elements(By.CSS_SELECTOR, f'[data-deployment="{NS}/smollm2"]'))
            log(f"ok - deployment card after {time.monotonic() - t0:.1f} s")
            ready = wait_for("smollm2 Ready on 2 boards", lambda: (lambda rows: len(rows) == 2 and rows)([
                r.text for r in d.find_elements(By.CSS_SELECTOR, 'article[data-board] tr[data-model="smollm2"]')
                if "Ready" in r.text]))
            wait_for("2/2 ready on the deployment card", lambda: "2/2 ready" in d.find_element(
                By.CSS_SELECTOR, f'[data-deployment="{NS}/smollm2"]').text)
            log(f"ok - smollm2 Ready on {len(ready)} boards in the page {time.monotonic() - t0:.1f} s after kubectl apply")
            for i in range(3):
                chat(gw, f"Say hello number {i}.")
            tps = wait_for("a tokens/s figure", lambda: [
                b.text for b in d.find_elements(By.CSS_SELECTOR, ".stat b")[3:4] if b.text not in ("", "–", "0.0")])
            events = wait_for("the events", lambda: d.find_element(By.ID, "events").text)
            # The gateway may start before the boards register: "watching 0 boards", then "joined".
            for want in ("watching", "created: smollm2", "smollm2: Ready"):
                if want not in events:
                    fail(f"no event {want!r} in {events!r}")
            log(f"ok - events list the deployment and the phases; {tps[0]} tokens/s shown after 3 requests")
            text = d.find_element(By.TAG_NAME, "main").text
            if "[object" in text or "undefined" in text or "NaN" in text:
                fail(f"the page renders a value wrongly: {text!r}")
            if screenshot:
                d.execute_script("window.scrollTo(0, 0)")
                for _ in range(3):  # the window's height changes the layout's: settle on the page's
                    height = d.execute_script("return document.documentElement.scrollHeight"
                                              " + window.outerHeight - window.innerHeight")
                    d.set_window_size(1280, min(max(height, 800), 2400))
                    time.sleep(0.3)
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                d.save_screenshot(str(screenshot))
                log(f"screenshot: {screenshot}")
                d.set_window_size(1280, 1000)
            phone_fits(d)
            errs = console.errors()
            if errs:
                fail(f"console errors: {errs}")
            log("ok - the page fits a phone's width; no console errors")
        finally:
            d.quit()


def main() -> None:
    part = sys.argv[1] if len(sys.argv) > 1 else ""
    if part == "agent" and len(sys.argv) == 3:
        agent_part(Path(sys.argv[2]))
    elif part == "cluster" and len(sys.argv) in (3, 5) and (len(sys.argv) == 3 or sys.argv[3] == "--screenshot"):
        cluster_part(Path(sys.argv[2]), Path(sys.argv[4]) if len(sys.argv) == 5 else None)
    else:
        fail("usage: status_page.py agent WORKDIR | cluster UP_FILE [--screenshot PATH]")


if __name__ == "__main__":
    main()
