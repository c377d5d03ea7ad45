"""The dashboard (SPEC §16): a real headless Chromium with JavaScript switched off, against a
real broker (gunicorn, two workers); scope and permission rules through Flask's client."""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait
from support.aged import sops_set
from support.brokers import RunningBroker, start_broker, stop_broker
from support.repos import git, make_secrets_repo
from support.tokens import bearer, make_token, minute_with_room

from broker.config import Config
from broker.scope import Scope
from broker.state.sqlite import SqliteTokenState
from broker.tokens.claims import MintRequest, mint
from broker.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
# Screenshots go to a temporary directory; `make screenshots` refreshes the README's copies.
SCREENSHOTS = Path(
    os.environ.get("VANTA_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="vanta-screenshots-")
)
CHROMIUM = os.environ.get("VANTA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VANTA_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WAIT_SECONDS = 20
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

# Every value is distinctive, so that finding one in a page cannot be a coincidence.
SECRETS: dict[str, dict[str, Any]] = {
    "prod": {
        "DATABASE_URL": "postgres://billing:pr0d-Db-pa55@db.prod.internal/billing",
        "REDIS_URL": "redis://:pr0d-r3dis-pa55@cache.prod.internal:6379/0",
        "STRIPE_SECRET_KEY": "sk_live_pr0d-stripe-51HxQ",
        "SESSION_SECRET": "pr0d-session-9f8e7d6c5b4a",
        "SMTP_PASSWORD": "pr0d-smtp-pa55-77",
        "API_KEYS": {"openai": "sk-pr0d-openai-4b3a2c1d", "sendgrid": "SG.pr0d-sendgrid-7e6f5a"},
        "WORKERS": 8,
    },
    "staging": {
        "DATABASE_URL": "postgres://billing:stag-Db-pa55@db.staging.internal/billing",
        "STRIPE_SECRET_KEY": "sk_test_stag-stripe-22KpL",
        "API_KEYS": {"openai": "sk-stag-openai-0a9b8c"},
    },
    "dev": {
        "DATABASE_URL": "postgres://app:dev-Db-pa55@localhost/app",
        "DEBUG": True,
        "API_KEYS": {"openai": "sk-dev-openai-123abc"},
    },
}
# (days ago, author, message, [(environment, key, new value)])
CHANGES = [
    (130, "Grace Ops", "prod: rotate DATABASE_URL after the DBA change",
     [("prod", "DATABASE_URL", "postgres://billing:pr0d-Db-r0tated@db.prod.internal/billing")]),
    (80, "Grace Ops", "prod: new Stripe restricted key",
     [("prod", "STRIPE_SECRET_KEY", "rk_live_pr0d-stripe-r0tated")]),
    (40, "Linus Dev", "staging: rotate the OpenAI key",
     [("staging", "API_KEYS/openai", "sk-stag-openai-r0tated")]),
    (12, "Ada Tester", "prod: rotate the OpenAI and SendGrid keys",
     [("prod", "API_KEYS/openai", "sk-pr0d-openai-r0tated"),
      ("prod", "API_KEYS/sendgrid", "SG.pr0d-sendgrid-r0tated")]),
    (3, "Grace Ops", "prod: SMTP password from the new provider",
     [("prod", "SMTP_PASSWORD", "pr0d-smtp-r0tated-88")]),
]  # fmt: skip
POLICY = """\
rotation:
  default_max_age_days: 180
  warn_days: 21
  rules:
    - environment: prod
      key_pattern: "DATABASE_*"
      max_age_days: 90
      warn_days: 14
    - environment: prod
      key_pattern: "API_KEYS/*"
      max_age_days: 30
      warn_days: 7
    - environment: prod
      max_age_days: 90
    - environment: dev
      max_age_days: 365
      warn_days: 30
"""


def _string_values(document: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for value in document.values():
        if isinstance(value, dict):
            found.extend(_string_values(value))
        elif isinstance(value, str):
            found.append(value)
    return found


SECRET_VALUES = [v for doc in SECRETS.values() for v in _string_values(doc)] + [
    value for *_, changes in CHANGES for _, _, value in changes
]


def assert_no_secret(text: str, *tokens: str) -> None:
    leaked = [v for v in SECRET_VALUES if v in text]
    assert not leaked, f"secret values in a page: {len(leaked)}"
    assert not any(token in text for token in tokens), "a token in a page"


# -- a Git repository with a history worth looking at -------------------------------------------


def commit_as(path: Path, author: str, message: str, days_ago: float) -> str:
    date = (datetime.now(UTC) - timedelta(days=days_ago, hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    env = {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", message, env=env)
    return git(path, "rev-parse", "HEAD")


@pytest.fixture
def ui_config(config: Config, tmp_path: Path, age_key, age_key_file: Path) -> Config:
    repo = make_secrets_repo(tmp_path / "billing-secrets", age_key.recipient)
    (repo.path / ".vanta.yaml").write_text(POLICY)
    for environment, document in SECRETS.items():
        repo.write(environment, document)
    commit_as(repo.path, "Ada Tester", "secrets: billing service for dev, staging and prod", 210)
    for days_ago, author, message, changes in CHANGES:
        for environment, key, value in changes:
            sops_set(repo, environment, key, value, age_key_file)
        commit_as(repo.path, author, message, days_ago)
    return replace(config, sops_files_path=repo.secrets_dir)


def token_for(config: Config, subject: str = "security-team", **scope: Any) -> str:
    scope.setdefault("permissions", ("secrets:list", "audit:read"))
    return make_token(config, subject=subject, ttl_minutes=30, **scope)


# -- a real broker: gunicorn, two workers --------------------------------------------------------


@pytest.fixture
def dashboard(ui_config: Config, tmp_path: Path) -> Iterator[RunningBroker]:
    broker = start_broker(ui_config, tmp_path)
    yield broker
    stop_broker(broker)


def make_traffic(config: Config, url: str) -> None:
    """API requests for the audit explorer to show: successes, a denial, a bad token."""
    billing = make_token(
        config, subject="billing-api", environment="prod", key_pattern="DATABASE_*"
    )
    deploy = make_token(
        config,
        subject="ci-deploy",
        environment="staging",
        permissions=("secrets:read", "secrets:list"),
    )
    api = f"{url}/api/v1"
    calls = [
        ("get", f"{api}/vault/prod/DATABASE_URL", billing, None, 200),
        ("get", f"{api}/vault/prod/STRIPE_SECRET_KEY", billing, None, 403),
        ("post", f"{api}/vault/staging/batch", deploy, {"pattern": "*"}, 200),
        ("get", f"{api}/vault/staging", deploy, None, 200),
        ("get", f"{api}/rotation?environment=staging", deploy, None, 200),
        ("get", f"{api}/vault/dev/DATABASE_URL", "not-a-token", None, 401),
        ("get", f"{api}/vault/prod/DATABASE_URL", billing, None, 200),
    ]
    for method, target, token, body, status in calls:
        headers = {"Authorization": f"Bearer {token}"}
        answer = requests.request(method, target, headers=headers, json=body, timeout=30)
        assert answer.status_code == status, (target, answer.text[:200])


# -- a real browser, JavaScript off ------------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument("--window-size=1280,860")
    # The dashboard must work with scripts disabled: the whole flow runs without them.
    options.add_experimental_option(
        "prefs", {"profile.managed_default_content_settings.javascript": 2}
    )
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_text(driver: WebDriver, css: str, text: str) -> None:
    """Wait until the element shows ``text``, riding out a page that is being replaced.

    Between a click and the next page, an element found on the old document can vanish
    before its text is read; Chromium then answers with a stale-element error or with
    "Node with given id does not belong to the document". Both mean "not yet".
    """
    WebDriverWait(driver, WAIT_SECONDS, ignored_exceptions=(WebDriverException,)).until(
        EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), text)
    )


@dataclass
class Pages:
    """Every page the browser showed, to search for values afterwards."""

    driver: WebDriver
    sources: dict[str, str] = field(default_factory=dict)

    def wait_heading(self, text: str) -> None:
        wait_text(self.driver, "main h1", text)

    def keep(self, name: str, screenshot: bool = True) -> None:
        self.sources[name] = self.driver.page_source
        if screenshot:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.set_window_size(1280, max(860, min(int(height) + 40, 2400)))
            self.driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
            self.driver.set_window_size(1280, 860)

    def table(self) -> list[list[str]]:
        rows = self.driver.find_elements(By.CSS_SELECTOR, "table.grid tbody tr")
        return [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in rows]

    def click_link(self, text: str) -> None:
        self.driver.find_element(By.LINK_TEXT, text).click()


def test_sign_in_browse_history_filter_the_audit_and_sign_out(
    browser, dashboard, ui_config, tmp_path
):
    make_traffic(ui_config, dashboard.url)
    token = token_for(ui_config)
    pages = Pages(browser)

    browser.get(f"{dashboard.url}/ui/")
    pages.wait_heading("Sign in")
    assert browser.execute_script("return typeof document") == "object"  # webdriver, not page JS
    pages.keep("sign-in")
    browser.find_element(By.NAME, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "form[action='/ui/login'] button").click()

    pages.wait_heading("Environments")
    assert pages.table() == [
        ["dev", "3", "0", "0"],
        ["prod", "8", "1", "4"],
        ["staging", "3", "0", "2"],
    ]
    assert "security-team" in browser.find_element(By.CSS_SELECTOR, ".who").text
    pages.keep("environments")

    pages.click_link("prod")
    pages.wait_heading("prod")
    statuses = {row[0]: (row[3], row[4], row[5]) for row in pages.table()}
    assert statuses == {
        "API_KEYS/openai": ("12", "30", "ok"),
        "API_KEYS/sendgrid": ("12", "30", "ok"),
        "DATABASE_URL": ("130", "90", "overdue"),
        "REDIS_URL": ("210", "90", "overdue"),
        "SESSION_SECRET": ("210", "90", "overdue"),
        "SMTP_PASSWORD": ("3", "90", "ok"),
        "STRIPE_SECRET_KEY": ("80", "90", "due 10 d left"),
        "WORKERS": ("210", "90", "overdue"),
    }
    pages.keep("environment")

    row = browser.find_element(By.XPATH, "//tr[td/code[text()='DATABASE_URL']]")
    row.find_element(By.LINK_TEXT, "history").click()
    pages.wait_heading("DATABASE_URL")
    history = [(r[2], r[3], r[4]) for r in pages.table()]
    assert history == [
        ("Grace Ops", "changed", "prod: rotate DATABASE_URL after the DBA change"),
        ("Ada Tester", "added", "secrets: billing service for dev, staging and prod"),
    ]
    assert "overdue" in browser.find_element(By.CSS_SELECTOR, "main p .badge").text
    pages.keep("key-history")

    pages.click_link("Audit")
    pages.wait_heading("Audit")
    everything = pages.table()
    assert len(everything) == 7  # the API traffic; dashboard pages are not API requests
    assert everything[0][1] == "secret.read" and everything[0][2] == "billing-api"  # newest first
    pages.keep("audit-all", screenshot=False)
    browser.find_element(By.NAME, "subject").send_keys("billing-api")
    Select(browser.find_element(By.NAME, "outcome")).select_by_visible_text("denied")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    WebDriverWait(browser, WAIT_SECONDS).until(EC.url_contains("outcome=denied"))
    filtered = pages.table()
    assert [(r[1], r[2], r[3], r[4], r[5].split()[0], r[6]) for r in filtered] == [
        ("secret.read", "billing-api", "prod", "STRIPE_SECRET_KEY", "denied", "403")
    ]
    pages.keep("audit")

    browser.find_element(By.CSS_SELECTOR, "form.signout button").click()
    wait_text(browser, "main", "You are signed out")
    pages.keep("signed-out", screenshot=False)
    assert "vanta_session" not in {c["name"] for c in browser.get_cookies()}
    browser.get(f"{dashboard.url}/ui/env/prod")
    pages.wait_heading("Sign in")
    pages.keep("after-sign-out", screenshot=False)

    for name, source in pages.sources.items():
        assert_no_secret(source, token)
        assert "<script" not in source.lower(), name
    for name in ("environments", "environment", "key-history", "audit"):
        assert 'action="/ui/logout"' in pages.sources[name], name


def test_cookies_are_httponly_and_samesite_strict_in_the_browser(browser, dashboard, ui_config):
    browser.get(f"{dashboard.url}/ui/")
    browser.find_element(By.NAME, "token").send_keys(token_for(ui_config))
    browser.find_element(By.CSS_SELECTOR, "form[action='/ui/login'] button").click()
    Pages(browser).wait_heading("Environments")
    cookies = {c["name"]: c for c in browser.get_cookies()}
    assert set(cookies) == {"vanta_browser", "vanta_session"}
    for cookie in cookies.values():
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert cookie["secure"] is False  # plain HTTP here; see the HTTPS test below
        assert cookie["path"] == "/ui"
    # The session cookie dies with the token (30 minutes), not at some later time.
    assert cookies["vanta_session"]["expiry"] <= time.time() + 30 * 60 + 5


# -- headers, cookies and sessions over HTTP -------------------------------------------------------


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field"
    return found.group(1)


def sign_in(http: requests.Session, url: str, token: str) -> requests.Response:
    form = http.get(f"{url}/ui/", timeout=30)
    return http.post(
        f"{url}/ui/login",
        data={"token": token, "csrf": csrf_of(form.text)},
        allow_redirects=False,
        timeout=30,
    )


def set_cookie_headers(response: requests.Response) -> dict[str, str]:
    headers = response.raw.headers.getlist("Set-Cookie")
    return {h.split("=", 1)[0]: h for h in headers}


def test_every_page_has_the_security_headers_and_a_sign_out(dashboard, ui_config):
    http = requests.Session()
    token = token_for(ui_config)
    first = http.get(f"{dashboard.url}/ui/", timeout=30)
    browser_cookie = set_cookie_headers(first)["vanta_browser"]
    signed_in = http.post(
        f"{dashboard.url}/ui/login",
        data={"token": token, "csrf": csrf_of(first.text)},
        allow_redirects=False,
        timeout=30,
    )
    assert signed_in.status_code == 303
    session_cookie = set_cookie_headers(signed_in)["vanta_session"]
    for header in (browser_cookie, session_cookie):
        attributes = {a.strip().split("=")[0].lower() for a in header.split(";")[1:]}
        assert {"httponly", "samesite", "path"} <= attributes and "secure" not in attributes
        assert "SameSite=Strict" in header and "Path=/ui" in header
    assert "Max-Age=" in session_cookie
    pages = {
        "/ui/": 200,
        "/ui/env/prod": 200,
        "/ui/env/prod/keys/API_KEYS/openai": 200,
        "/ui/audit": 200,
        "/ui/audit?outcome=success&since=2020-01-01T00:00:00Z&page=1": 200,
        "/ui/env/qa": 404,
        "/ui/env/Bad..Name": 400,
        "/ui/env/prod/keys/NOPE": 404,
        "/ui/audit?since=yesterday": 400,
    }
    for path, status in pages.items():
        answer = http.get(f"{dashboard.url}{path}", timeout=30)
        assert answer.status_code == status, path
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (path, name)
        assert 'action="/ui/logout"' in answer.text and ">Sign out<" in answer.text, path
        assert_no_secret(answer.text, token)
    for path in ("/ui/", "/ui/static/ui.css"):  # signed out, and the stylesheet
        answer = requests.get(f"{dashboard.url}{path}", timeout=30)
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (path, name)


def test_csrf_token_issued_to_another_browser_is_refused(dashboard, ui_config):
    token = token_for(ui_config)
    alice, mallory = requests.Session(), requests.Session()
    alice_csrf = csrf_of(alice.get(f"{dashboard.url}/ui/", timeout=30).text)
    mallory.get(f"{dashboard.url}/ui/", timeout=30)  # mallory has a browser cookie of her own
    for http, csrf in ((mallory, alice_csrf), (mallory, ""), (requests.Session(), alice_csrf)):
        answer = http.post(
            f"{dashboard.url}/ui/login",
            data={"token": token, "csrf": csrf},
            allow_redirects=False,
            timeout=30,
        )
        assert answer.status_code == 400
        assert "vanta_session" not in set_cookie_headers(answer)
    answer = alice.post(
        f"{dashboard.url}/ui/login",
        data={"token": token, "csrf": alice_csrf},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 303 and "vanta_session" in set_cookie_headers(answer)
    # Sign-out is a CSRF-protected POST too: without the token it ends nothing.
    refused = alice.post(f"{dashboard.url}/ui/logout", data={}, allow_redirects=False, timeout=30)
    assert refused.status_code == 400
    assert alice.get(f"{dashboard.url}/ui/env/prod", timeout=30).status_code == 200


def test_a_bad_or_revoked_token_cannot_sign_in_and_is_never_echoed(dashboard, ui_config):
    http = requests.Session()
    forged = token_for(ui_config)[:-4] + "AAAA"
    answer = sign_in(http, dashboard.url, forged)
    assert answer.status_code == 401 and "not valid" in answer.text
    assert forged not in answer.text and "vanta_session" not in set_cookie_headers(answer)
    revoked = token_for(ui_config)
    jti = _jti(ui_config, revoked)
    SqliteTokenState(ui_config.state_db).revoke(jti, int(time.time()) + 3600)
    answer = sign_in(http, dashboard.url, revoked)
    assert answer.status_code == 403 and "revoked" in answer.text


def _jti(config: Config, token: str) -> str:
    from broker.tokens.claims import verify

    return verify(token, config.keyring, issuer=config.jwt_issuer, audience=config.jwt_audience).jti


def test_a_session_works_on_every_broker_and_sign_out_ends_it_everywhere(
    dashboard, ui_config, tmp_path
):
    """Two brokers (two workers each) sharing the state store and the signing key: the
    session lives in no process's memory, and its end is recorded where all of them look."""
    other = start_broker(ui_config, tmp_path)
    try:
        http = requests.Session()
        assert sign_in(http, dashboard.url, token_for(ui_config)).status_code == 303
        cookie = http.cookies.get("vanta_session", path="/ui")
        replay = {"Cookie": f"vanta_session={cookie}"}
        for url in (dashboard.url, other.url) * 4:  # fresh connections: any worker
            answer = requests.get(f"{url}/ui/env/prod", headers=replay, allow_redirects=False)
            assert answer.status_code == 200, url
        ended = http.post(
            f"{other.url}/ui/logout",
            data={"csrf": csrf_of(http.get(f"{other.url}/ui/", timeout=30).text)},
            allow_redirects=False,
            timeout=30,
        )
        assert ended.status_code == 303
        assert "Max-Age=0" in set_cookie_headers(ended)["vanta_session"]
        for url in (dashboard.url, other.url) * 4:  # a copy of the cookie is refused everywhere
            answer = requests.get(f"{url}/ui/env/prod", headers=replay, allow_redirects=False)
            assert answer.status_code == 303 and answer.headers["Location"] == "/ui/"
    finally:
        stop_broker(other)


def test_the_session_ends_with_the_token_and_with_its_revocation(dashboard, ui_config):
    lifetime = 10  # room for sign-in on a slow machine
    issued = int(time.time()) - 60 + lifetime  # a one-minute token with seconds left
    short, claims = mint(
        MintRequest("short-lived", Scope("*", "*", ("secrets:list",)), 1, None),
        ui_config.keyring,
        issuer=ui_config.jwt_issuer,
        audience=ui_config.jwt_audience,
        now=issued,
    )
    http = requests.Session()
    signed_in = sign_in(http, dashboard.url, short)
    assert signed_in.status_code == 303
    session_cookie = SimpleCookie(set_cookie_headers(signed_in)["vanta_session"])["vanta_session"]
    assert int(session_cookie["max-age"]) <= lifetime
    replay = {"Cookie": f"vanta_session={session_cookie.value}"}
    deadline = time.monotonic() + 30
    while True:  # poll: served while the token lives, refused from its expiry on
        answer = requests.get(f"{dashboard.url}/ui/", headers=replay, allow_redirects=False)
        moment = time.time()
        if "Sign in" in answer.text:
            break
        assert moment < claims.expires_at + 5 and time.monotonic() < deadline
        time.sleep(0.05)  # the poll's interval, not a wait for something to happen
    assert moment >= claims.expires_at - 1
    # A revoked token ends its session at once.
    long_lived = token_for(ui_config)
    http = requests.Session()
    assert sign_in(http, dashboard.url, long_lived).status_code == 303
    assert http.get(f"{dashboard.url}/ui/env/prod", allow_redirects=False).status_code == 200
    SqliteTokenState(ui_config.state_db).revoke(
        _jti(ui_config, long_lived), int(time.time()) + 3600
    )
    answer = http.get(f"{dashboard.url}/ui/env/prod", allow_redirects=False)
    assert answer.status_code == 303


# -- what a token may see (in-process: the same app, Flask's client) ------------------------------


@pytest.fixture
def ui_client(ui_config: Config):
    return create_app(ui_config).test_client()


def signed_in_client(client, token: str):
    form = client.get("/ui/")
    answer = client.post("/ui/login", data={"token": token, "csrf": csrf_of(form.text)})
    assert answer.status_code == 303
    return client


def test_pages_show_only_environments_and_keys_inside_the_token_scope(ui_client, ui_config):
    token = token_for(ui_config, environment="prod", key_pattern="API_KEYS/*")
    client = signed_in_client(ui_client, token)
    index = client.get("/ui/").text
    assert 'href="/ui/env/prod"' in index
    assert "/ui/env/dev" not in index and "/ui/env/staging" not in index
    environment = client.get("/ui/env/prod").text
    assert "API_KEYS/openai" in environment and "API_KEYS/sendgrid" in environment
    assert "DATABASE_URL" not in environment and "SMTP_PASSWORD" not in environment
    assert client.get("/ui/env/staging").status_code == 403
    assert client.get("/ui/env/prod/keys/DATABASE_URL").status_code == 403
    assert client.get("/ui/env/prod/keys/API_KEYS/openai").status_code == 200
    for page in (index, environment):
        assert_no_secret(page, token)


def test_keys_and_history_need_secrets_list_and_the_audit_needs_audit_read(ui_client, ui_config):
    reader = token_for(ui_config, permissions=("secrets:read",))
    client = signed_in_client(ui_client, reader)
    index = client.get("/ui/").text
    assert "lacks <code>secrets:list</code>" in index and "/ui/env/prod" not in index
    assert ">Audit<" not in index
    assert client.get("/ui/env/prod").status_code == 403
    assert client.get("/ui/env/prod/keys/DATABASE_URL").status_code == 403
    assert client.get("/ui/audit").status_code == 403
    assert_no_secret(index, reader)


def test_the_audit_explorer_keeps_to_the_token_environment_and_pages(ui_client, ui_config):
    admin = make_token(ui_config, subject="admin")
    for environment in ("dev", "prod") * 40:  # 80 audited API requests
        ui_client.get(f"/api/v1/vault/{environment}", headers={"Authorization": f"Bearer {admin}"})
    client = signed_in_client(ui_client, token_for(ui_config, environment="dev"))
    first = client.get("/ui/audit").text
    assert first.count("<tr>") - 1 == 40 and "<td>prod</td>" not in first  # dev only
    assert "Older" not in first
    assert client.get("/ui/audit?environment=prod").status_code == 403
    everyone = signed_in_client(ui_client, token_for(ui_config))
    page1 = everyone.get("/ui/audit?subject=admin").text
    page2 = everyone.get("/ui/audit?subject=admin&page=2").text
    assert page1.count("<tr>") - 1 == 50 and "Older" in page1
    assert page2.count("<tr>") - 1 == 30 and "Newer" in page2 and "Older" not in page2
    assert "page=2" in page1 and "subject=admin" in page1
    local = everyone.get("/ui/audit?since=2000-01-01T00:00&until=2000-01-02").text
    assert "No audit record matches" in local


def test_cookies_are_secure_over_https(ui_config):
    client = create_app(ui_config).test_client()
    form = client.get("/ui/", base_url="https://vault.example")
    assert "Secure" in form.headers["Set-Cookie"]
    answer = client.post(
        "/ui/login",
        base_url="https://vault.example",
        data={"token": token_for(ui_config), "csrf": csrf_of(form.text)},
    )
    assert answer.status_code == 303
    session_cookie = answer.headers["Set-Cookie"]
    assert session_cookie.startswith("vanta_session=")
    assert all(flag in session_cookie for flag in ("Secure", "HttpOnly", "SameSite=Strict"))


def test_secrets_outside_git_are_listed_without_history(config, tmp_path, ui_config):
    plain = tmp_path / "plain"
    plain.mkdir()
    source = ui_config.sops_files_path / "dev.enc.yaml"
    (plain / "dev.enc.yaml").write_bytes(source.read_bytes())
    client = signed_in_client(
        create_app(replace(config, sops_files_path=plain)).test_client(), token_for(config)
    )
    index = client.get("/ui/").text
    assert 'href="/ui/env/dev"' in index and "—" in index  # no rotation status to count
    environment = client.get("/ui/env/dev").text
    assert "not in Git" in environment and "API_KEYS/openai" in environment
    key = client.get("/ui/env/dev/keys/API_KEYS/openai")
    assert key.status_code == 200 and "no history" in key.text
    assert client.get("/ui/env/dev/keys/NOPE").status_code == 404
    for page in (index, environment, key.text):
        assert_no_secret(page)


@pytest.mark.parametrize(
    ("method", "path"), [("get", "/ui/"), ("post", "/ui/login"), ("get", "/ui/env/prod")]
)
def test_a_throttled_dashboard_request_is_429_not_a_500(config, tmp_path, method, path):
    """The red team saw 500 and a traceback: the throttle answers before the dashboard's
    own set-up ran, and its error page needed that set-up."""
    broker = start_broker(config, tmp_path, extra_env={"VANTA_AUTH_FAILURES_PER_MINUTE": "2"})
    try:
        minute_with_room()
        for _ in range(3):
            r = requests.get(f"{broker.url}/api/v1/vault/dev/PORT", headers=bearer("x"))
            assert r.status_code == 401
        r = requests.request(method, f"{broker.url}{path}", data={"token": "t"}, timeout=30)
        assert r.status_code == 429 and "Retry-After" in r.headers
        assert r.headers["X-Frame-Options"] == "DENY"
    finally:
        stop_broker(broker)
    assert "Traceback" not in broker.log() and "AttributeError" not in broker.log()


def test_an_oversized_sign_in_is_413_not_a_500(config, tmp_path):
    broker = start_broker(config, tmp_path)
    try:
        r = requests.post(
            f"{broker.url}/ui/login", data={"token": "a" * (1024 * 1024 + 10)}, timeout=30
        )
        assert r.status_code == 413
        assert r.headers.get("Server", "vanta-broker") == "vanta-broker"
    finally:
        stop_broker(broker)
    assert "Traceback" not in broker.log() and "AttributeError" not in broker.log()
