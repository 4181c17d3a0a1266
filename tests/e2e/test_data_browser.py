"""In a real browser: sign in, upload a CSV through the real file input, see the
profile charts drawn and the embedded report."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import sign_in, wait_idle

pytestmark = pytest.mark.browser
DATA = Path(__file__).resolve().parents[2] / "data"


def test_upload_and_profile(app_url, page, tmp_path):
    sign_in(page, app_url, "ana")
    page.get_by_role("link", name="Data").click()
    wait_idle(page)
    page.get_by_text("Upload a file").click()
    csv = tmp_path / "upload_test.csv"
    csv.write_text((DATA / "penguins.csv").read_text())
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(csv))
    wait_idle(page)
    page.get_by_role("button", name="Ingest").click()
    page.get_by_text("Ingested upload_test:1").wait_for()
    wait_idle(page)
    page.get_by_role("tab", name="Profile").click()
    charts = page.locator('[data-testid="stPlotlyChart"]')
    charts.first.wait_for()
    # Plotly really drew something: an SVG plot area inside the chart.
    page.locator('[data-testid="stPlotlyChart"] .main-svg').first.wait_for()
    assert charts.count() >= 2
    page.screenshot(path=str(tmp_path / "profile.png"), full_page=True)
