"""The trader's walk through the page in headless Chromium against a live stack (daphne, the
runner worker, the Deribit simulator on loopback). Screenshots land in the artifacts folder."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model

from apps.brokers.simulator.testing import deribit_sim_thread

from .browser import live_stack, login

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # playwright's sync API runs a loop

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
    page.select_option("#id_strategy", "ma_cross")
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
