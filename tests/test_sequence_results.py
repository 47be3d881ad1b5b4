"""The committed sequence-study results: every number their pages quote is one kdlab wrote
(summary.md, runs.csv, the seed-0 analysis.json), rounded as quoted, or a published baseline
the page names as such; every figure they show is there."""

from __future__ import annotations

import contextlib
import csv
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {  # quoted from papers (the pages say from where), not measured here
    "japanese_vowels": {"0.924", "0.949", "0.959", "0.99"},
    "pickup_gesture_wiimote_z": {"0.56", "0.66"},
}
NUMBER = re.compile(r"(?<![\w.])[-−+]?\d+\.\d+")


def written_numbers(result: Path) -> list[float]:
    """Every number in the files kdlab wrote for this result."""
    values = [float(v) for v in NUMBER.findall((result / "summary.md").read_text().replace(
        "−", "-"))]  # fmt: skip
    with (result / "runs.csv").open() as stream:
        for row in csv.DictReader(stream):
            for cell in row.values():
                with contextlib.suppress(TypeError, ValueError):
                    values.append(float(cell))
    for name in ("analysis.json", "sequence_heads.json"):  # the seed-0 figures' own numbers
        values += list(json_numbers(json.loads((result / "attention-seed0" / name).read_text())))
    return values


def json_numbers(node):
    if isinstance(node, bool):
        return
    if isinstance(node, int | float):
        yield float(node)
    elif isinstance(node, dict):
        for value in node.values():
            yield from json_numbers(value)
    elif isinstance(node, list):
        for value in node:
            yield from json_numbers(value)


@pytest.mark.parametrize("dataset", sorted(PUBLISHED))
def test_every_number_a_result_page_quotes_was_written_by_kdlab(dataset):
    result = ROOT / "docs" / "results" / dataset
    page = (result / "README.md").read_text()
    prose = re.sub(r"```.*?```", "", page, flags=re.S)  # commands are not results
    written = written_numbers(result)
    for text in NUMBER.findall(prose):
        quoted = text.replace("−", "-").lstrip("+")
        if quoted.lstrip("-") in PUBLISHED[dataset] or float(quoted) >= 1.5:
            continue  # a published baseline, or a count, a time, a distance in frames
        digits = len(quoted.split(".")[1])
        value = float(quoted)
        found = any(abs(round(w, digits) - value) < 1e-9 for w in written)
        assert found, f"{dataset}/README.md quotes {text}, which no file kdlab wrote gives"


@pytest.mark.parametrize("dataset", sorted(PUBLISHED))
def test_every_figure_a_result_page_shows_is_committed(dataset):
    result = ROOT / "docs" / "results" / dataset
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (result / "README.md").read_text()):
        assert (result / link).read_bytes()[:4] == b"\x89PNG", link
