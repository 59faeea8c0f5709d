"""Browser tests of the chat client (GET /) and the dashboard (GET /dashboard).

Run by tests/browser/run.sh, which starts the cluster (or is pointed at one with --url). Each
test drives headless chromium through selenium and waits on conditions with deadlines
(WebDriverWait), never on fixed sleeps. Screenshots are written to --artifacts. The last line
printed is 'N passed, M failed'.

The tests that kill a node need a way to kill and restart one (`NodeControl`): the children of a
`switchboard up` this run started (--up-pid: SIGKILL, and `up` restarts the node), or a command
(--node-control CMD, run as `CMD kill NODE` and `CMD restart NODE`, e.g. `docker kill` and
`docker start` of the node's container). Without either they are skipped.
"""

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 15  # seconds: the deadline of an ordinary condition
NODE_DOWN_WAIT = 10  # seconds: the dashboard must show a killed node within this
XSS = "<img src=x onerror=alert(1)>"


class Context:
    """What every test shares: the cluster's URL, the admin token, the browsers opened."""

    def __init__(self, args):
        self.url = args.url.rstrip("/")
        with open(args.admin_token_file, encoding="utf-8") as f:
            self.admin_token = f.read().strip()
        self.artifacts = args.artifacts
        self.nodes = NodeControl.of(args)
        self.run = secrets.token_hex(3)
        self.drivers = []
        self.alice = self.browser()
        self.bob = self.browser()
        self.room = f"lobby-{self.run}"
        self.dashboard = None

    def browser(self, width=1280, height=860, phone=False):
        options = Options()
        if phone:
            metrics = {"width": width, "height": height, "pixelRatio": 2}
            options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
        options.binary_location = "/usr/bin/chromium"
        for flag in [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            f"--window-size={width},{height}",
            "--force-device-scale-factor=1",
            "--lang=en-GB",
        ]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        self.drivers.append(driver)
        return driver

    def screenshot(self, driver, name):
        path = os.path.join(self.artifacts, name)
        driver.save_screenshot(path)
        return path

    def close(self):
        for driver in self.drivers:
            try:
                driver.quit()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def wait(driver, condition, timeout=WAIT, message=""):
    # The dashboard redraws its tables each second: an element found a moment ago may be gone,
    # and the condition is simply asked again.
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=[StaleElementReferenceException]).until(condition, message)


def api(ctx, method, path, token=None, body=None, headers=None):
    request = urllib.request.Request(ctx.url + path, method=method)
    if token:
        request.add_header("authorization", f"Bearer {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("content-type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, data=data, timeout=10) as response:
        raw = response.read()
        return response.status, dict(response.headers), json.loads(raw) if raw else None


def register(ctx, driver, username):
    driver.get(ctx.url + "/")
    wait(driver, lambda d: d.find_element(By.ID, "auth").is_displayed(), message="login form")
    driver.find_element(By.ID, "auth-username").send_keys(username)
    driver.find_element(By.ID, "auth-password").send_keys("correct horse battery")
    driver.find_element(By.ID, "register-button").click()
    wait(driver, lambda d: d.find_element(By.ID, "whoami").text == username, message="logged in")


def open_room(driver, name):
    # Found and clicked in one condition: the room list is drawn again when rooms change, and a
    # link found a moment before the click may be gone (the condition is then asked again).
    def click_link(d):
        for element in d.find_elements(By.CSS_SELECTOR, ".room-link"):
            if element.find_element(By.CSS_SELECTOR, ".room-link-name").text == name:
                element.click()
                return True
        return False

    wait(driver, click_link, message=f"room {name} listed")
    wait(driver, lambda d: d.find_element(By.ID, "room-name").text == f"#{name}", message="room open")


def post(driver, text):
    box = wait(driver, lambda d: d.find_element(By.ID, "composer-input"), message="composer")
    wait(driver, lambda d: box.is_displayed() and box.is_enabled(), message="composer shown")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def bodies(driver):
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#message-list .message .body")]


def shows(driver, text):
    return wait(driver, lambda d: text in bodies(d), message=f"message {text!r} shown")


def live(driver):
    wait(driver, lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "live",
         message="stream live")


# ---------------------------------------------------------------------------------------------


def test_pages_are_served_with_a_strict_policy(ctx):
    for path in ["/", "/dashboard"]:
        status, headers, _ = api_raw(ctx, path)
        assert status == 200, status
        policy = headers.get("content-security-policy", "")
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy, policy


def api_raw(ctx, path):
    with urllib.request.urlopen(ctx.url + path, timeout=10) as response:
        headers = {k.lower(): v for k, v in response.headers.items()}
        return response.status, headers, response.read()


def test_two_users_see_each_other_live(ctx):
    alice, bob = ctx.alice, ctx.bob
    register(ctx, alice, f"alice_{ctx.run}")
    alice.find_element(By.ID, "new-room-name").send_keys(ctx.room)
    alice.find_element(By.ID, "new-room-button").click()
    wait(alice, lambda d: d.find_element(By.ID, "room-name").text == f"#{ctx.room}", message="room created")
    live(alice)

    register(ctx, bob, f"bob_{ctx.run}")
    open_room(bob, ctx.room)
    wait(bob, lambda d: d.find_element(By.ID, "join-button").is_displayed(), message="join offered")
    bob.find_element(By.ID, "join-button").click()
    live(bob)

    post(alice, "Hi Bob! Welcome to the lobby.")
    shows(bob, "Hi Bob! Welcome to the lobby.")
    post(bob, "Hello Alice, good to be here.")
    shows(alice, "Hello Alice, good to be here.")
    post(alice, "Messages arrive over the room's event stream, live.")
    shows(bob, "Messages arrive over the room's event stream, live.")
    post(bob, "And they survive a reload, too.")
    shows(alice, "And they survive a reload, too.")


def test_a_double_click_posts_once(ctx):
    alice, bob = ctx.alice, ctx.bob
    once = f"posted once {ctx.run}"
    box = alice.find_element(By.ID, "composer-input")
    box.send_keys(once)
    button = alice.find_element(By.ID, "send-button")
    # Two clicks in one task: the second lands while the first request is in flight.
    alice.execute_script("arguments[0].click(); arguments[0].click();", button)
    after = f"after the double click {ctx.run}"
    wait(alice, lambda d: box.get_attribute("value") == "", message="composer cleared")
    post(alice, after)
    shows(bob, after)
    assert bodies(bob).count(once) == 1, bodies(bob)
    assert bodies(alice).count(once) == 1, bodies(alice)


def test_a_message_of_html_is_shown_as_text(ctx):
    alice, bob = ctx.alice, ctx.bob
    post(bob, XSS)
    shows(alice, XSS)
    shows(bob, XSS)
    for driver in (alice, bob):
        assert not driver.find_elements(By.CSS_SELECTOR, "#message-list img"), "markup was parsed"
        try:
            driver.switch_to.alert
            raise AssertionError("an alert fired")
        except NoAlertPresentException:
            pass


def test_a_reload_keeps_the_session(ctx):
    alice = ctx.alice
    alice.refresh()
    wait(alice, lambda d: d.find_element(By.ID, "whoami").text == f"alice_{ctx.run}", message="still logged in")
    wait(alice, lambda d: d.find_element(By.ID, "room-name").text == f"#{ctx.room}", message="room reopened")
    shows(alice, "Hello Alice, good to be here.")
    live(alice)
    post(alice, "Still here after a reload.")
    shows(ctx.bob, "Still here after a reload.")
    ctx.screenshot(alice, "chat.png")


def test_older_history_loads_on_scroll(ctx):
    status, _, session = api(ctx, "POST", "/v1/auth/register",
                             body={"username": f"carol_{ctx.run}", "password": "correct horse battery"})
    token = session["token"]
    _, _, room = api(ctx, "POST", "/v1/rooms", token=token, body={"name": f"history-{ctx.run}"})
    for i in range(1, 81):
        api(ctx, "POST", f"/v1/rooms/{room['id']}/messages", token=token,
            body={"body": f"history {i}"}, headers={"idempotency-key": f"h-{ctx.run}-{i}"})
    bob = ctx.bob
    open_room(bob, f"history-{ctx.run}")
    bob.find_element(By.ID, "join-button").click()
    shows(bob, "history 80")
    assert "history 1" not in bodies(bob), "the first page should be the latest 50"
    bob.execute_script("document.getElementById('messages').scrollTop = 0;")
    shows(bob, "history 1")
    wait(bob, lambda d: "beginning" in d.find_element(By.ID, "history-state").text, message="start reached")
    assert bodies(bob)[:3] == ["history 1", "history 2", "history 3"], bodies(bob)[:3]
    open_room(bob, ctx.room)


def test_phone_width(ctx):
    phone = ctx.browser(390, 844, phone=True)
    phone.get(ctx.url + "/")
    token = ctx.alice.execute_script("return localStorage.getItem('switchboard.session');")
    phone.execute_script("localStorage.setItem('switchboard.session', arguments[0]);", token)
    phone.get(ctx.url + "/")
    open_room(phone, ctx.room)
    assert not phone.find_element(By.ID, "sidebar").is_displayed(), "the room list should give way"
    live(phone)
    shows(phone, "Still here after a reload.")
    width = phone.execute_script("return [document.documentElement.scrollWidth, window.innerWidth];")
    assert width[0] <= width[1] == 390, f"the page scrolls sideways ({width[0]}px in {width[1]}px)"
    ctx.screenshot(phone, "chat-phone.png")
    phone.find_element(By.ID, "back-button").click()
    wait(phone, lambda d: d.find_element(By.ID, "sidebar").is_displayed(), message="back to the rooms")


def node_pid(up_pid, name):
    """The pid of node `name`: the child of `switchboard up` whose environment names it."""
    wanted = f"SWITCHBOARD_NODE_NAME={name}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
            if int(ppid) != up_pid:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if wanted in f.read().split(b"\0"):
                    return int(entry)
        except (OSError, IndexError, ValueError):
            continue
    return None


class NodeControl:
    """How the tests kill a node's process and bring it back."""

    @staticmethod
    def of(args):
        if args.node_control:
            return CommandControl(args.node_control)
        if args.up_pid is not None:
            return UpControl(args.up_pid)
        return None


class UpControl(NodeControl):
    """The nodes of a `switchboard up` this run started: SIGKILL, and `up` restarts the node."""

    def __init__(self, up_pid):
        self.up_pid = up_pid

    def kill(self, name):
        pid = node_pid(self.up_pid, name)
        assert pid, f"no process for {name}"
        os.kill(pid, signal.SIGKILL)

    def restart(self, name):
        pass  # `switchboard up` restarts a node that dies, at once


class CommandControl(NodeControl):
    """A command run as `CMD kill NODE` and `CMD restart NODE` (e.g. docker kill, docker start)."""

    def __init__(self, command):
        self.command = command

    def run(self, action, name):
        done = subprocess.run([self.command, action, name], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{self.command} {action} {name}: exit {done.returncode}: {done.stderr.strip()}"

    def kill(self, name):
        self.run("kill", name)

    def restart(self, name):
        self.run("restart", name)


NO_CONTROL = "skipped: no way to kill this cluster's nodes (it was not started by this run; see --node-control)"


def open_dashboard(ctx):
    # Tall enough that the screenshot holds every panel.
    driver = ctx.browser(1440, 2000)
    ctx.dashboard = driver
    driver.get(ctx.url + "/dashboard")
    wait(driver, lambda d: d.find_element(By.ID, "admin-token").is_displayed(), message="token form")
    driver.find_element(By.ID, "admin-token").send_keys(ctx.admin_token)
    driver.find_element(By.ID, "token-button").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#node-rows tr")) >= 5, message="nodes listed")
    return driver


def dashboard_screenshot(ctx, driver):
    # The charts fill from analytics every few seconds; wait for them before the screenshot.
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-messages svg path.line"), message="charts drawn")
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-rooms svg path.line"), message="room chart drawn")
    ctx.screenshot(driver, "dashboard.png")


def test_dashboard_shows_message_rates(ctx):
    driver = ctx.dashboard or open_dashboard(ctx)

    def rates(d):
        # Every node that is up has a rate in and out once two polls have counted its frames.
        rows = [r for r in d.find_elements(By.CSS_SELECTOR, "#node-rows tr") if r.get_attribute("data-state") == "up"]
        cells = [r.find_elements(By.CSS_SELECTOR, "td.rates[data-in][data-out]") for r in rows]
        if len(rows) < 5 or not all(cells):
            return False
        return [(float(c[0].get_attribute("data-in")), float(c[0].get_attribute("data-out"))) for c in cells]

    measured = wait(driver, rates, message="a message rate for every node")
    assert all(r_in >= 0 and r_out >= 0 for r_in, r_out in measured), measured
    # Heartbeats and the dashboard's own polls flow on every link, so no node is silent.
    assert all(r_in > 0 or r_out > 0 for r_in, r_out in measured), measured
    header = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "section[aria-labelledby='nodes-title'] thead th")]
    assert "Messages/s" in header, header
    print(f"    messages/s in, out: {', '.join(f'{a:.1f}/{b:.1f}' for a, b in measured)}")


def test_dashboard_shows_a_node_go_down_and_come_back(ctx):
    driver = ctx.dashboard or open_dashboard(ctx)
    if ctx.nodes is None:
        dashboard_screenshot(ctx, driver)
        return NO_CONTROL
    def analytics(d):
        rows = d.find_elements(By.CSS_SELECTOR, "#node-rows tr[data-node^='analytics@']")
        return rows and (rows[0].get_attribute("data-node"), rows[0].get_attribute("data-incarnation"))

    name, before = wait(driver, analytics, message="an analytics node listed")
    killed = time.monotonic()
    ctx.nodes.kill(name)
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"#events li[data-kind='node_down'][data-peer='{name}']"),
         timeout=NODE_DOWN_WAIT, message=f"{name} shown down")
    seen_down = time.monotonic() - killed
    ctx.nodes.restart(name)

    def back(d):
        rows = d.find_elements(By.CSS_SELECTOR, f"#node-rows tr[data-node='{name}']")
        return rows and rows[0].get_attribute("data-state") == "up" and rows[0].get_attribute("data-incarnation") != before

    wait(driver, back, timeout=60, message=f"{name} back with a new incarnation")
    print(f"    {name} shown down {seen_down:.2f}s after it was killed, and back")
    dashboard_screenshot(ctx, driver)


def test_the_stream_resumes_after_the_http_node_restarts(ctx):
    if ctx.nodes is None:
        return NO_CONTROL
    alice = ctx.alice
    live(alice)
    status, _, me = api(ctx, "POST", "/v1/auth/login",
                        body={"username": f"bob_{ctx.run}", "password": "correct horse battery"})
    assert status == 200
    _, _, rooms = api(ctx, "GET", "/v1/rooms", token=me["token"])
    room = next(r for r in rooms["rooms"] if r["name"] == ctx.room)
    # Every http node is killed, so whichever serves the page's stream (behind a balancer, any of
    # them) goes; with `switchboard up` that is the one node serving the URL under test.
    _, _, cluster = api(ctx, "GET", "/v1/admin/nodes", token=ctx.admin_token)
    https = [n["name"] for n in cluster["nodes"] if n["name"].startswith("http@") and not n["state"].startswith("down")]
    assert https, cluster
    for name in https:
        ctx.nodes.kill(name)
    wait(alice, lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") != "live",
         message="the page shows the stream is down")
    for name in https:
        ctx.nodes.restart(name)
    missed = f"posted while the stream was down {ctx.run}"

    def posted(_driver):
        # The http node is restarting: the post is retried, with one key, until it answers.
        try:
            api(ctx, "POST", f"/v1/rooms/{room['id']}/messages", token=me["token"],
                body={"body": missed}, headers={"idempotency-key": f"missed-{ctx.run}"})
            return True
        except urllib.error.HTTPError as error:
            # A balancer with no replica up answers 502/503 until one is back.
            if error.code in (502, 503, 504):
                return False
            raise
        except (urllib.error.URLError, ConnectionError):
            return False

    wait(alice, posted, timeout=60, message="posted once the http node is back")
    shows(alice, missed)
    live(alice)
    assert bodies(alice).count(missed) == 1


def test_dashboard_resolves_a_report(ctx):
    bob = ctx.bob
    # Bob reports Alice's message from the chat.
    target = next(e for e in bob.find_elements(By.CSS_SELECTOR, "#message-list .message")
                  if e.find_element(By.CSS_SELECTOR, ".body").text == "Hi Bob! Welcome to the lobby.")
    bob.execute_script("arguments[0].scrollIntoView();", target)
    report = target.find_element(By.XPATH, ".//button[text()='Report']")
    bob.execute_script("arguments[0].click();", report)
    wait(bob, lambda d: d.find_element(By.ID, "report-dialog").is_displayed(), message="report dialog")
    reason = f"test report {ctx.run}"
    bob.find_element(By.ID, "report-reason").send_keys(reason)
    bob.find_element(By.ID, "report-submit").click()
    wait(bob, lambda d: not d.find_element(By.ID, "report-dialog").is_displayed(), message="report sent")
    driver = ctx.dashboard or open_dashboard(ctx)

    def listed(d):
        for row in d.find_elements(By.CSS_SELECTOR, "#report-rows tr[data-report]"):
            if reason in row.text:
                return row
        return False

    def dismiss(d):
        row = listed(d)
        if not row:
            return False
        report_id = row.get_attribute("data-report")
        row.find_element(By.XPATH, ".//button[text()='Dismiss']").click()
        return report_id

    report_id = wait(driver, dismiss, message="report listed and dismissed")
    wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, f"#report-rows tr[data-report='{report_id}']"),
         message="report resolved")


def test_no_policy_violations_or_script_errors(ctx):
    problems = []
    for driver in ctx.drivers:
        for entry in driver.get_log("browser"):
            text = entry.get("message", "")
            if entry.get("level") == "SEVERE" or "Content Security Policy" in text:
                # A refused connection while a node restarts is the network, not the page.
                if "Failed to load resource" in text or "net::ERR_" in text:
                    continue
                problems.append(text)
    assert not problems, "\n".join(problems)


TESTS = [
    test_pages_are_served_with_a_strict_policy,
    test_two_users_see_each_other_live,
    test_a_double_click_posts_once,
    test_a_message_of_html_is_shown_as_text,
    test_a_reload_keeps_the_session,
    test_older_history_loads_on_scroll,
    test_phone_width,
    test_dashboard_shows_message_rates,
    test_dashboard_shows_a_node_go_down_and_come_back,
    test_the_stream_resumes_after_the_http_node_restarts,
    test_dashboard_resolves_a_report,
    test_no_policy_violations_or_script_errors,
]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--admin-token-file", required=True)
    parser.add_argument("--artifacts", default="target/browser-artifacts")
    parser.add_argument("--up-pid", type=int, default=None,
                        help="the `switchboard up` whose children are the nodes (kill -9; up restarts them)")
    parser.add_argument("--node-control", default=None,
                        help="a command run as `CMD kill NODE` and `CMD restart NODE`")
    args = parser.parse_args()
    os.makedirs(args.artifacts, exist_ok=True)
    started = time.monotonic()
    passed = failed = skipped = 0
    ctx = None
    try:
        ctx = Context(args)
        for test in TESTS:
            began = time.monotonic()
            try:
                outcome = test(ctx)
            except Exception:  # noqa: BLE001 - every failure is reported, then the next test runs
                failed += 1
                print(f"FAIL {test.__name__} ({time.monotonic() - began:.1f}s)")
                traceback.print_exc(file=sys.stdout)
                for i, driver in enumerate(ctx.drivers):
                    ctx.screenshot(driver, f"failed-{test.__name__}-{i}.png")
                continue
            if isinstance(outcome, str) and outcome.startswith("skipped"):
                skipped += 1
                print(f"SKIP {test.__name__}: {outcome}")
            else:
                passed += 1
                print(f"ok   {test.__name__} ({time.monotonic() - began:.1f}s)")
    except Exception:  # noqa: BLE001 - a browser that does not start fails the run
        traceback.print_exc(file=sys.stdout)
        failed += 1
    finally:
        if ctx:
            ctx.close()
    print(f"browser tests took {time.monotonic() - started:.1f}s; screenshots in {args.artifacts}")
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
