"""Notebook 06's comparison widget as a person uses it: JupyterLab in headless Chromium.

JupyterLab serves the executed notebook 06 of the tiny study; Playwright drives Debian's
``chromium`` (Playwright's own browser downloads are not used), runs every cell, changes the
image and model dropdowns, drags the opacity slider and checks the panels' pixels on screen.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import nbformat
import numpy as np
import pytest

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs playwright: pip install -e '.[dev]'")

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH: the browser test drives "
                       "Debian's chromium (apt-get install chromium)"),
]

NOTEBOOK = "06_saliency_visualization.ipynb"
SERVER_START_S = 90  # JupyterLab writes its runtime file once it listens
RUN_ALL_S = 240  # kernel start, imports and notebook 06 on a loaded 2-core CPU
REDRAW_S = 60  # one widget update: a comm message, three small PNGs back
# Toasts (news, update checks) would cover the panels in a screenshot.
QUIET_SETTINGS = {"doNotDisturbMode": True, "fetchNews": "false", "checkForUpdates": False}


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab server."""

    url: str  # the server's base URL, ending in "/"
    token: str

    def notebook_url(self, name: str) -> str:
        return f"{self.url}lab/tree/{name}?token={self.token}"


def server_info(path: Path) -> dict | None:
    """The runtime file a Jupyter server writes once it listens; None until it is complete."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not yet written, or caught half-way
        return None


@contextmanager
def jupyterlab(folder: Path, env: dict[str, str]) -> Iterator[Lab]:
    """A JupyterLab server on a free port serving ``folder``, with its own settings and
    runtime directories, shut down (kernels with it) on exit; its log is ``folder/../lab.log``."""
    runtime, settings = folder.parent / "runtime", folder.parent / "settings"
    quiet = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    quiet.parent.mkdir(parents=True)
    quiet.write_text(json.dumps(QUIET_SETTINGS))
    token = secrets.token_hex(16)
    log_path = folder.parent / "lab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
             "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={folder}", f"--LabApp.user_settings_dir={settings}",
             f"--LabApp.workspaces_dir={folder.parent / 'workspaces'}", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class="
             "jupyterlab.handlers.announcements.NeverCheckForUpdate"],
            env={**env, "JUPYTER_RUNTIME_DIR": str(runtime),
                 "JUPYTER_CONFIG_DIR": str(folder.parent / "config"),
                 "JUPYTER_DATA_DIR": str(folder.parent / "data")}, stdout=log,
            stderr=subprocess.STDOUT)
    try:
        deadline, info = time.monotonic() + SERVER_START_S, runtime / f"jpserver-{server.pid}.json"
        while (started := server_info(info)) is None:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Lab(started["url"], token)
    finally:
        server.terminate()  # jupyter_server stops its kernels on SIGTERM
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def decoded(screenshot: bytes) -> np.ndarray:
    """A PNG screenshot as an H×W×3 uint8 array."""
    return cv2.imdecode(np.frombuffer(screenshot, np.uint8), cv2.IMREAD_COLOR)


def panel_pixels(
    pictures: list[sync_api.Locator], before: list[str | None],
) -> tuple[list[str], list[np.ndarray]]:
    """Wait until each panel whose ``before`` source is given shows another image, then return
    every panel's source and on-screen pixels (each image decoded before it is captured)."""
    for picture, source in zip(pictures, before):
        if source is not None:
            sync_api.expect(picture).not_to_have_attribute("src", source, timeout=REDRAW_S * 1000)
    sources = [picture.get_attribute("src") for picture in pictures]
    for picture in pictures:
        picture.evaluate("image => image.decode()")
    return sources, [decoded(picture.screenshot(animations="disabled")) for picture in pictures]


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two panels differ by more than screen noise (mean over pixels, in grey levels)."""
    return a.shape != b.shape or np.abs(a.astype(float) - b).mean() > 1.0


def assert_not_blank(panels: list[np.ndarray]) -> None:
    for i, panel in enumerate(panels):
        assert panel.shape[0] >= 64 and panel.shape[1] >= 64, f"panel {i}: {panel.shape}"
        assert panel.std() > 10, f"panel {i} is blank (pixel std {panel.std():.1f})"


@pytest.fixture
def lab(tiny_study, tmp_path) -> Iterator[Lab]:
    """JupyterLab on the study's executed notebook 06, its outputs cleared."""
    folder = tmp_path / "lab"
    folder.mkdir()
    notebook = nbformat.read(tiny_study.executed / NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(notebook, folder / NOTEBOOK)
    # The kernel only reads saved outputs: one thread, leaving the other core to the browser.
    with jupyterlab(folder, {**os.environ, "OMP_NUM_THREADS": "1"}) as server:
        yield server


def test_dropdowns_and_slider_redraw_the_panels(lab, tiny_study, tmp_path):
    kernel = nbformat.read(tiny_study.executed / NOTEBOOK, as_version=4).metadata.kernelspec
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(REDRAW_S * 1000)
            page.goto(lab.notebook_url(NOTEBOOK))
            idle = page.locator(".jp-StatusBar-Widget").get_by_text(
                f"{kernel.display_name} | Idle", exact=True)
            idle.wait_for(timeout=RUN_ALL_S * 1000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            pictures_css = "img.widget-image"
            widget = page.locator(".jp-OutputArea-output").filter(
                has=page.locator(pictures_css)).last
            pictures = [widget.locator(pictures_css).nth(i) for i in range(3)]
            pictures[-1].wait_for(timeout=RUN_ALL_S * 1000)
            idle.wait_for(timeout=RUN_ALL_S * 1000)
            assert page.get_by_text("Error displaying widget").count() == 0
            titles = widget.locator(".widget-vbox > .widget-label")
            sources, first = panel_pixels(pictures, [None] * 3)
            assert_not_blank(first)
            widget.screenshot(path=tmp_path / "comparison_first.png")

            # Another defective image: every panel shows it.
            image = widget.get_by_label("image", exact=True)
            image.select_option(index=1)
            assert "(defect)" in image.locator("option:checked").inner_text()
            sources, second = panel_pixels(pictures, sources)
            assert_not_blank(second)
            assert all(differs(a, b) for a, b in zip(first, second))

            # Another model: only its panel changes, and its title names it.
            model = widget.get_by_label("model", exact=True)
            model.select_option(index=1)
            chosen = model.locator("option:checked").inner_text()
            sync_api.expect(titles.nth(2)).to_have_text(chosen)
            sources, third = panel_pixels(pictures, [None, None, sources[2]])
            assert_not_blank(third)
            assert differs(second[2], third[2])
            assert not any(differs(a, b) for a, b in zip(second[:2], third[:2]))

            # The opacity slider dragged past its right end: full overlays on every panel.
            handle = widget.get_by_role("slider")
            track = widget.locator(".noUi-target").bounding_box()
            grip = handle.bounding_box()
            page.mouse.move(grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2)
            page.mouse.down()
            y = grip["y"] + grip["height"] / 2
            page.mouse.move(track["x"] + track["width"] + 40, y, steps=10)
            page.mouse.up()
            sync_api.expect(widget.locator(".widget-readout")).to_have_text("1.00")
            _, fourth = panel_pixels(pictures, sources)
            assert_not_blank(fourth)
            assert all(differs(a, b) for a, b in zip(third, fourth))
            widget.screenshot(path=tmp_path / "comparison.png")
        finally:
            browser.close()
