"""Headless Chromium as a person's browser: open a page offline and report what it drew."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from .services import unavailable

# Runs in the page after load: every plot div DVC wrote, whether vega drew an SVG with marks in
# it, and whether each image fits the window (dvc plots diff puts revisions side by side).
PROBE = """<script>
window.addEventListener('load', () => setTimeout(() => {
  const plots = [...document.querySelectorAll('body > div[id]')].map(div => {
    const svg = div.querySelector('.vega-embed svg');
    const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0, right: 0};
    const imgs = [...div.querySelectorAll('img')];
    return {id: div.id, svg: !!svg,
            width: box.width, height: box.height, right: box.right,
            marks: svg ? svg.querySelectorAll('path, line, text').length : 0,
            axes: [...div.querySelectorAll('.role-axis-title text')].map(t => t.textContent),
            images: imgs.length, loaded: imgs.filter(i => i.naturalWidth > 0).length,
            image_right: Math.max(0, ...imgs.map(i => i.getBoundingClientRect().right))};
  });
  const out = document.createElement('pre');
  out.id = 'kdlab-probe';
  out.textContent = JSON.stringify({window: window.innerWidth, plots: plots});
  document.body.appendChild(out);
}, 1000));
</script>"""


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        unavailable("browser", "chromium not installed (.ci/run installs Debian's chromium)")
    return exe


def _run(args: list[str], width: int) -> str:
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         # no network at all: a CDN script would fail to load, as on a cluster node
         "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=15000",
         f"--window-size={width},2400", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return proc.stdout


def probe_page(html_path: Path, width: int = 1366) -> dict:
    """Open a copy of the page with the probe appended; returns the probe's JSON."""
    html = html_path.read_text(encoding="utf8")
    end = html.rfind("</body>")  # the last one: the vega bundle has the string in its source
    probed = html_path.with_name(html_path.stem + "-probe.html")
    probed.write_text(html[:end] + PROBE + html[end:], encoding="utf8")
    dom = _run(["--dump-dom", probed.as_uri()], width)
    found = re.search(r'<pre id="kdlab-probe">(.*?)</pre>', dom, re.S)
    assert found, f"the page never finished loading in chromium:\n{dom[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def screenshot(html_path: Path, png: Path, width: int = 1366) -> Path:
    _run([f"--screenshot={png}", html_path.as_uri()], width)
    assert png.is_file() and png.stat().st_size > 10_000, png
    return png
