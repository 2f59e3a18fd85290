"""Real pages in a real (headless) Chromium."""
import pytest

from sendit_core.testing import PASSWORD, browser_login, save_screenshot

pytestmark = pytest.mark.browser


def test_login_through_the_real_form_reaches_the_dashboard(live_server, page):
    page.goto(live_server.url + "/settings")
    assert "/login" in page.url
    save_screenshot(page, "login")
    page.fill("#password", "wrong")
    page.click("button[type=submit]")
    assert page.locator(".flash-error").inner_text() == "That password is not right."
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + "/settings")
    assert page.locator(".flash-success").inner_text() == "You are logged in."
    page.click("nav >> text=Dashboard")
    page.wait_for_url(live_server.url + "/")
    assert page.locator("h1").inner_text() == "Dashboard"
    save_screenshot(page, "dashboard-minimal")
    page.click("text=Log out")
    page.wait_for_url("**/login")
    page.goto(live_server.url + "/")
    assert "/login" in page.url


def test_the_interface_fits_a_narrow_screen(live_server, browser):
    context = browser.new_context(viewport={"width": 390, "height": 800})
    tab = context.new_page()
    browser_login(tab, live_server.url)
    width = tab.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    context.close()
