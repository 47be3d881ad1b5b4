"""The HTML page `dvc plots show/diff` fill, with vega, vega-lite and vega-embed inlined.

DVC's default page loads the three libraries from a CDN, so on a cluster node or any offline
machine every Vega plot is blank. `.dvc/config` points `plots.html_template` at the page this
module writes; `make install` writes it from the pinned `vl-convert-python` package (the Vega
project's own bundle of the three libraries), so it always matches `uv.lock` and is not tracked.
DVC fills `{plot_divs}` and `{refresh_tag}`; `{scripts}` is left out on purpose (it holds DVC's
CDN tags).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

PAGE = Path(".dvc") / "plots-offline.html"
"""Where the page goes (`plots.html_template` is `plots-offline.html`, relative to .dvc)."""

STYLE = """
    body { font-family: sans-serif; margin: 16px; max-width: 100%; }
    /* dvc plots diff puts one image per revision side by side in a nowrap row: share the
       page's width between them instead of overflowing it */
    div[style*="nowrap"] { display: flex; flex-wrap: wrap; align-items: flex-start; }
    div[style*="nowrap"] > p { flex-basis: 100%; margin: 4px 0; }
    div[style*="nowrap"] > div { flex: 1 1 0; min-width: 0; }
    img { max-width: 100%; height: auto; }
    table { border-spacing: 12px; }
    .vega-embed { max-width: 100%; overflow-x: auto; }
"""


@functools.cache
def page_html() -> str:
    import vl_convert

    bundle = vl_convert.javascript_bundle()
    for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}"):
        # DVC substitutes these with str.replace: the bundle must not contain them
        assert placeholder not in bundle, placeholder
    assert "</script" not in bundle
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n{refresh_tag}\n'
        f"<title>kdlab plots</title>\n<style>{STYLE}</style>\n"
        f"<!-- vega, vega-lite, vega-embed: vl-convert-python {vl_convert.__version__} -->\n"
        f"<script>\n{bundle}\n</script>\n</head>\n<body>\n{{plot_divs}}\n</body>\n</html>\n"
    )


def write_page(path: Path = PAGE) -> Path:
    from kdlab.fsutil import write_bytes_atomic

    write_bytes_atomic(path, page_html().encode("utf8"))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=PAGE)
    print(f"wrote {write_page(parser.parse_args(argv).path)}")


if __name__ == "__main__":
    main()
