"""The trader's walk through the page in headless Chromium against a live stack (daphne, the
runner worker, the Deribit simulator on loopback). Screenshots land in the artifacts folder."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from apps.brokers.simulator.testing import deribit_sim_thread
from tradebaas.testing import wait_for

from .browser import live_stack, login

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def trader(transactional_db):
    return get_user_model().objects.create_user(username="walker", password=PASSWORD, is_staff=True)


@pytest.fixture
def sim():
    with deribit_sim_thread(speed=None) as running:
        yield running


@pytest.fixture
def stack(tmp_path, sim):
    with live_stack(
        tmp_path, TRADEBAAS_DERIBIT_URL=sim.ws_url, TRADEBAAS_PAPER_SPEED="0"
    ) as running:
        yield running


def shot(page, artifacts_dir, name: str) -> None:
    page.screenshot(path=str(artifacts_dir / f"{name}.png"), full_page=True)


def test_login_broker_credentials_masked_test_connection_and_preview(
    browser, stack, sim, trader, artifacts_dir
):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{stack.url}/")
    assert "/accounts/login/" in page.url
    shot(page, artifacts_dir, "01-login")
    login(page, stack.url, "walker", PASSWORD)
    page.wait_for_selector('#live[data-live], body[data-live="up"]', timeout=10000)
    shot(page, artifacts_dir, "02-dashboard")

    # Settings → Broker: Deribit (testnet) with the simulator's credentials.
    page.click("#open-settings")
    page.wait_for_selector("#broker-form")
    page.click("label.broker-choice:has(input[value=deribit])")
    page.wait_for_selector("label.broker-choice.selected:has(input[value=deribit])")
    page.fill("#id_api_key", sim.client_id + "-wrong")
    page.fill("#id_api_secret", "nope")
    page.click("#broker-test")
    page.wait_for_selector("#broker-result.error")
    assert "nope" not in page.inner_html("#settings-broker")

    page.fill("#id_api_key", sim.client_id)
    page.fill("#id_api_secret", sim.client_secret)
    page.click("#broker-test")
    page.wait_for_selector("#broker-result.ok")
    assert "Balance" in page.inner_text("#broker-result")

    page.fill("#id_api_key", sim.client_id)
    page.fill("#id_api_secret", sim.client_secret)
    page.click("#broker-connect")
    page.wait_for_selector("#broker-state[data-state=connected]")
    masked = page.inner_text("#saved-key")
    assert masked.endswith(sim.client_id[-4:]) and sim.client_secret not in page.content()
    shot(page, artifacts_dir, "03-settings-broker")
    # the header pill follows without a reload
    page.wait_for_selector(
        "#connection-pill[data-state=connected]:has-text('Deribit')", timeout=5000
    )

    page.click("#tab-risk")
    page.wait_for_selector("#settings-risk")
    shot(page, artifacts_dir, "04-settings-risk")
    page.click("#tab-notifications")
    page.wait_for_selector("#settings-notifications")
    shot(page, artifacts_dir, "05-settings-notifications")
    page.keyboard.press("Escape")

    # Strategy card: pick MA cross, 5 % risk, see the preview.
    choose_strategy(page, "ma_cross")
    page.wait_for_selector("#id_param_fast")
    page.select_option("#id_risk_mode", "percent")
    page.fill("#id_risk_value", "5")
    page.wait_for_selector("#preview-result[data-amount]")
    assert "at risk" in page.inner_text("#risk-preview")
    shot(page, artifacts_dir, "06-preview")


def test_pages_render_on_a_phone_width_screen(browser, stack, trader, artifacts_dir):
    page = browser.new_page(viewport={"width": 390, "height": 844})
    login(page, stack.url, "walker", PASSWORD)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the dashboard scrolls sideways on a phone ({width}px)"
    shot(page, artifacts_dir, "07-phone-dashboard")
    for name, path in (
        ("trades", "/web/trades/"),
        ("metrics", "/web/metrics/"),
        ("backtest", "/web/backtest/"),
    ):
        page.goto(f"{stack.url}{path}")
        shot(page, artifacts_dir, f"08-phone-{name}")


SAMPLE = str(
    __import__("apps.web.backtests", fromlist=["SAMPLE_DIR"]).SAMPLE_DIR / "btcusdt-1m-sample.csv"
)


def choose_strategy(page, strategy_id: str) -> None:
    """Pick a strategy and wait until its parameter fields have arrived (they replace the old)."""
    with page.expect_response(lambda r: "/web/strategy/params" in r.url):
        page.select_option("#id_strategy", strategy_id)
    page.wait_for_load_state("networkidle")


def start_fast_test(page, *, stop_pct: str = "5", take_pct: str = "5") -> None:
    choose_strategy(page, "fast_test")
    page.wait_for_selector("#id_param_stop_loss_pct")
    page.fill("#id_param_stop_loss_pct", stop_pct)
    page.fill("#id_param_take_profit_pct", take_pct)
    page.select_option("#id_risk_mode", "percent")
    page.fill("#id_risk_value", "5")
    page.wait_for_selector("#preview-result[data-amount]")
    page.click("#start-button")
    page.wait_for_selector("#stop-button")


@pytest.fixture
def paper_stack(tmp_path):
    with live_stack(tmp_path, TRADEBAAS_PAPER_SPEED="120") as running:
        yield running


def test_paper_run_live_states_checkpoints_linked_legs_then_stop(
    browser, paper_stack, trader, artifacts_dir
):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    login(page, paper_stack.url, "walker", PASSWORD)
    page.wait_for_selector('body[data-live="up"]')
    start_fast_test(page)
    # No reload from here on: everything arrives over the socket.
    page.wait_for_selector(
        "#run-state[data-state=ANALYZING], #run-state[data-state=POSITION_OPEN]", timeout=30000
    )
    page.wait_for_selector("#run-checkpoints li", timeout=30000)
    page.wait_for_selector("#position-card[data-has-position=yes]", timeout=30000)
    legs = page.locator("#position-card tr.leg")
    assert legs.count() == 3
    statuses = {
        legs.nth(i).get_attribute("data-role"): legs.nth(i).get_attribute("data-status")
        for i in range(3)
    }
    assert statuses["entry"] == "filled"
    assert statuses["sl"] == "untriggered" and statuses["tp"] == "untriggered"
    page.wait_for_selector("#run-state[data-state=POSITION_OPEN]")
    shot(page, artifacts_dir, "10-position-open")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#stop-button")
    page.wait_for_selector("#run-state[data-state=STOPPED]", timeout=15000)
    page.wait_for_selector("#start-button")
    # the position keeps its stop and target on the exchange after the run stops
    assert page.locator("#position-card[data-has-position=yes]").count() == 1
    shot(page, artifacts_dir, "11-stopped")


@pytest.fixture
def replay_sim():
    with deribit_sim_thread(speed=120, data_path=SAMPLE) as running:
        yield running


@pytest.fixture
def deribit_stack(tmp_path, replay_sim):
    with live_stack(tmp_path, TRADEBAAS_DERIBIT_URL=replay_sim.ws_url) as running:
        yield running


def connect_deribit(page, sim) -> None:
    page.click("#open-settings")
    page.wait_for_selector("#broker-form")
    page.click("label.broker-choice:has(input[value=deribit])")
    page.wait_for_selector("label.broker-choice.selected:has(input[value=deribit])")
    page.fill("#id_api_key", sim.client_id)
    page.fill("#id_api_secret", sim.client_secret)
    page.click("#broker-connect")
    page.wait_for_selector("#broker-state[data-state=connected]")
    page.keyboard.press("Escape")


def test_an_injected_error_shows_error_details_and_only_restart_resumes(
    browser, deribit_stack, replay_sim, trader, artifacts_dir
):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    login(page, deribit_stack.url, "walker", PASSWORD)
    connect_deribit(page, replay_sim)
    replay_sim.faults.fail_next_request("private/buy", code=11050)
    replay_sim.faults.fail_next_request("private/sell", code=11050)
    start_fast_test(page)
    page.wait_for_selector("#run-state[data-state=ERROR]", timeout=30000)
    page.wait_for_selector("#error-dialog[open] #error-message", timeout=10000)
    assert page.inner_text("#error-message").strip()
    assert page.locator("#error-context").inner_text().strip() not in ("", "{}")
    assert "Using risk settings" in page.inner_text("#error-log")  # the loop's own log lines
    shot(page, artifacts_dir, "12-error")
    page.click("#error-dialog .dialog-head button")
    # Start is gone; the only way forward is Restart.
    assert page.locator("#start-button").count() == 0
    assert page.locator("#resume-button").count() == 0
    page.click("#restart-button")
    page.wait_for_selector("#run-state:not([data-state=ERROR])", timeout=15000)
    shot(page, artifacts_dir, "13-restarted")


def test_a_dropped_broker_connection_shows_disconnected_and_reconnect(
    browser, deribit_stack, replay_sim, trader, artifacts_dir
):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    login(page, deribit_stack.url, "walker", PASSWORD)
    connect_deribit(page, replay_sim)
    start_fast_test(page)
    page.wait_for_selector(
        "#run-state[data-state=ANALYZING], #run-state[data-state=POSITION_OPEN]", timeout=30000
    )
    replay_sim.drop_connections()
    page.wait_for_selector("#connection-pill[data-state=disconnected]", timeout=20000)
    page.wait_for_selector("#run-state[data-state=PAUSED]", timeout=20000)
    page.wait_for_selector("#header-reconnect")
    assert page.locator("#resume-button[disabled]").count() == 1  # no trading until reconnected
    shot(page, artifacts_dir, "14-disconnected")
    page.click("#header-reconnect")
    page.wait_for_selector("#connection-pill[data-state=connected]", timeout=20000)
    # reconnecting does not resume trading by itself
    assert page.locator("#run-state[data-state=PAUSED]").count() == 1
    page.wait_for_selector("#resume-button:not([disabled])", timeout=10000)
    shot(page, artifacts_dir, "15-reconnected")


def test_close_position_then_kill_switch_on_a_paper_run(
    browser, paper_stack, trader, artifacts_dir
):
    from apps.orders.models import Trade

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    login(page, paper_stack.url, "walker", PASSWORD)
    page.wait_for_selector('body[data-live="up"]')
    start_fast_test(page)
    page.wait_for_selector("#position-card[data-has-position=yes]", timeout=30000)
    # the chart gets the loop's candles
    page.wait_for_function(
        "Number(document.body.dataset.chartCandles || 0) > 0 || "
        "document.querySelector('#chart-candle[data-candle]') !== null",
        timeout=20000,
    )
    page.click("#close-position")
    page.click("#close-confirm")
    page.wait_for_selector("#close-result .ok, #action-result.ok", timeout=30000)
    assert "Closed BTC-PERPETUAL" in page.inner_text("#close-result")
    page.keyboard.press("Escape")
    # the loop sees the position gone and records the trade from the fills. The state alone
    # cannot tell: POSITION_OPEN matches before the loop has noticed the close.
    wait_for(lambda: Trade.objects.exists(), timeout=30, what="the closed trade in history")
    page.wait_for_selector(
        "#run-state[data-state=ANALYZING], #run-state[data-state=POSITION_OPEN]", timeout=30000
    )
    shot(page, artifacts_dir, "16-closed-by-hand")
    page.click("#kill-switch")
    page.check("#kill-close-position")
    page.click("#kill-confirm")
    page.wait_for_selector("#kill-result #action-result.ok", timeout=40000)
    assert "stopped" in page.inner_text("#kill-result")
    page.keyboard.press("Escape")
    page.wait_for_selector("#run-state[data-state=STOPPED]", timeout=15000)
    page.wait_for_selector("#position-card[data-has-position=no]", timeout=30000)
    shot(page, artifacts_dir, "17-kill-switch")
