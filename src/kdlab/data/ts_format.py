"""Reader for the UEA/UCR time-series archive `.ts` format (the files sktime and aeon ship).

A `.ts` file is UTF-8 text in two parts. Lines starting with `#` are comments and blank lines
are skipped everywhere. The header is a run of `@key value` lines (keys case-insensitive) that
ends at a line holding only `@data`:

    @problemName JapaneseVowels          name of the problem (kept as written)
    @timeStamps false                    `true` (values written as `(t, v)` pairs) is refused
    @missing false                       a header only: a `?`/`NaN` value is refused either way
    @univariate false                    `true` means one channel per sample
    @dimensions 12                       optional channel count (aeon writes `@dimension`)
    @equalLength false                   `true` means every sample has the same length
    @seriesLength 29                     optional, the common length of an equal-length file
    @classLabel true 1 2 3 4 5 6 7 8 9   the class labels, space-separated, in header order
    @data

`@classLabel false` (or no `@classLabel` at all, as aeon writes unlabelled files) means the
samples carry no label. `@targetLabel true` marks a regression file and is refused: this reader
is for classification. Unknown header keys are ignored, as aeon ignores them.

After `@data`, each non-empty line is one sample: channels separated by `:`, the values of a
channel by `,`, and, in a labelled file, the class label last (the text after the last `:`):

    1.2,1.3,1.1:0.5,0.6,0.4:Walking      two channels of three time steps, label "Walking"

Samples may differ in length (JapaneseVowels: 7 to 29 steps), but the channels of one sample
may not. Each sample becomes a float32 array of shape (T, C), time first. Labels are kept as
the exact strings of the file: aeon's loader lowercases every line, which turns "Walking" into
"walking" and would no longer match the header's class list in a case-sensitive consumer.

Anything the reader cannot represent faithfully is refused with one `DataError` line naming the
file and the 1-based line number: missing values, non-numbers, ragged channels, a channel count
that changes between samples, undeclared labels, time stamps, regression targets.
"""

from __future__ import annotations

import codecs
import dataclasses
import re
from pathlib import Path
from typing import NoReturn

import numpy as np

from kdlab.errors import DataError

# Plain decimal numbers only: Python's float() (and numpy's str->float) also accept "1_000",
# "inf", "nan" and "infinity", none of which an archive file should contain.
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER_RE = re.compile(rf"\s*{_NUMBER}\s*")
_CHANNEL_RE = re.compile(rf"\s*{_NUMBER}\s*(?:,\s*{_NUMBER}\s*)*")
_MISSING = frozenset({"?", "nan", "+nan", "-nan"})
_BOOL_KEYS = frozenset({"timestamps", "missing", "univariate", "equallength", "targetlabel"})
_INT_KEYS = {"dimensions": "dimensions", "dimension": "dimensions", "serieslength": "serieslength"}


@dataclasses.dataclass(frozen=True)
class TsData:
    """The samples of one `.ts` file.

    `labels` is empty when the file declares no class labels; otherwise it has one entry per
    sample, each one of `class_labels`.
    """

    name: str  # @problemName ("" if absent)
    series: list[np.ndarray]  # one (T_i, C) float32 array per sample, time first
    labels: list[str]  # exactly as written in the file (never lowercased)
    class_labels: tuple[str, ...]  # from @classLabel, in header order


def read_ts(path: str | Path) -> TsData:
    """Read a `.ts` file; raises `DataError` (one line: file, line number, problem) if invalid."""
    return parse_ts(read_utf8(Path(path)), source=str(path))


def read_utf8(path: Path) -> str:
    """A dataset text file's content (a UTF-8 BOM dropped), or one DataError line: unreadable,
    or not UTF-8 (with the line of the first bad byte). Shared by kdlab.data.spoter_csv."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text (byte {exc.start})") from None
    return text


def parse_ts(text: str, source: str = "<string>") -> TsData:
    """Parse the text of a `.ts` file; `source` names the file in error messages."""
    lines = text.removeprefix("\ufeff").split("\n")
    header = _Header(source)
    data_line = 0
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("@"):
            raise _error(
                source,
                lineno,
                f"expected an @ header line or @data before the data, got {_show(line)}",
            )
        if header.read(line, lineno):
            data_line = lineno
            break
    if not data_line:
        last = len(lines) - 1 if lines[-1] == "" else len(lines)  # a final "\n" ends a line
        raise _error(
            source, last, "the file ends without an @data line (the header ends with @data)"
        )

    series: list[np.ndarray] = []
    labels: list[str] = []
    first_line = 0  # the line of the first sample, named when a later one disagrees with it
    for lineno in range(data_line + 1, len(lines) + 1):
        line = lines[lineno - 1].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            raise _error(source, lineno, f"header line {_show(line)} after @data")
        fields = line.split(":")
        if header.labelled:
            if len(fields) < 2:
                raise _error(source, lineno, "no class label (a sample ends with ':<label>')")
            label = fields[-1].strip()
            if label not in header.class_set:
                declared = " ".join(header.class_labels)
                raise _error(
                    source,
                    lineno,
                    f"label {_show(label)} is not declared in @classLabel (declared: {declared})",
                )
            fields = fields[:-1]
        sample = _parse_sample(source, lineno, fields, header.labelled)
        n_channels = sample.shape[1]
        if header.dimensions is not None:
            if n_channels != header.dimensions:
                raise _error(
                    source,
                    lineno,
                    f"sample has {n_channels} channel(s), but @dimensions on line "
                    f"{header.dimensions_line} says {header.dimensions}",
                )
        elif header.univariate and n_channels != 1:
            raise _error(
                source,
                lineno,
                f"sample has {n_channels} channels, but @univariate true on line "
                f"{header.univariate_line} says 1",
            )
        elif series and n_channels != series[0].shape[1]:
            raise _error(
                source,
                lineno,
                f"sample has {n_channels} channel(s), but the first sample (line {first_line}) "
                f"has {series[0].shape[1]}",
            )
        if header.equal_length:
            # A file that says equal length but is not would be silently mis-batched downstream.
            if header.series_length is not None and len(sample) != header.series_length:
                raise _error(
                    source,
                    lineno,
                    f"sample has {len(sample)} time steps, but @seriesLength on line "
                    f"{header.series_length_line} says {header.series_length}",
                )
            if series and len(sample) != len(series[0]):
                raise _error(
                    source,
                    lineno,
                    f"sample has {len(sample)} time steps, but the first sample (line "
                    f"{first_line}) has {len(series[0])} and @equalLength is true",
                )
        if not series:
            first_line = lineno
        series.append(sample)
        if header.labelled:
            labels.append(label)
    if not series:
        raise _error(source, data_line, "no samples after @data")
    return TsData(header.name, series, labels, header.class_labels)


class _Header:
    """The header lines read so far, with the line each setting came from (for messages)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.name = ""
        self.univariate = False
        self.univariate_line = 0
        self.equal_length = False
        self.dimensions: int | None = None
        self.dimensions_line = 0
        self.series_length: int | None = None
        self.series_length_line = 0
        self.labelled = False
        self.class_labels: tuple[str, ...] = ()
        self.class_set: frozenset[str] = frozenset()

    def read(self, line: str, lineno: int) -> bool:
        """Take in one `@` line; True at `@data`."""
        key_token, *rest = line.split(None, 1)
        key = key_token[1:].lower()
        value = rest[0].strip() if rest else ""  # kept as written: names and labels keep case
        if key == "data":
            if value:
                raise self._error(lineno, f"@data takes no value, got {_show(value)}")
            return True
        if key == "problemname":
            self.name = value
        elif key in _BOOL_KEYS:
            flag = self._bool(lineno, key_token, value)
            if key == "timestamps" and flag:
                raise self._error(lineno, "@timeStamps true is not supported (only plain values)")
            if key == "targetlabel" and flag:
                raise self._error(
                    lineno,
                    "@targetLabel true marks a regression file; only classification "
                    "(@classLabel true <labels>) is supported",
                )
            if key == "univariate":
                self.univariate, self.univariate_line = flag, lineno
            elif key == "equallength":
                self.equal_length = flag
        elif key in _INT_KEYS:
            if not value.isdigit() or int(value) < 1:
                raise self._error(
                    lineno, f"{key_token} needs a whole number >= 1, got {_show(value)}"
                )
            if _INT_KEYS[key] == "dimensions":
                self.dimensions, self.dimensions_line = int(value), lineno
            else:
                self.series_length, self.series_length_line = int(value), lineno
        elif key == "classlabel":
            self._class_labels(lineno, key_token, value)
        return False

    def _class_labels(self, lineno: int, key_token: str, value: str) -> None:
        tokens = value.split()
        flag = self._bool(lineno, key_token, tokens[0] if tokens else "")
        if not flag:
            if len(tokens) > 1:
                raise self._error(lineno, "@classLabel false takes no labels")
            self.labelled, self.class_labels, self.class_set = False, (), frozenset()
            return
        labels = tuple(tokens[1:])
        if not labels:
            raise self._error(lineno, "@classLabel true must list the class labels")
        seen: set[str] = set()
        for label in labels:
            if label in seen:
                raise self._error(lineno, f"class label {_show(label)} is declared twice")
            seen.add(label)
        self.labelled, self.class_labels, self.class_set = True, labels, frozenset(labels)

    def _bool(self, lineno: int, key_token: str, value: str) -> bool:
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise self._error(lineno, f"{key_token} needs true or false, got {_show(value)}")
        return lowered == "true"

    def _error(self, lineno: int, message: str) -> DataError:
        return _error(self.source, lineno, message)


def _parse_sample(source: str, lineno: int, fields: list[str], labelled: bool) -> np.ndarray:
    """The channels of one data line as a (T, C) float32 array."""
    channels: list[list[float]] = []
    for index, field in enumerate(fields, start=1):
        if not field.strip():
            raise _error(source, lineno, f"channel {index} is empty")
        if _CHANNEL_RE.fullmatch(field):
            values = [float(v) for v in field.split(",")]
        else:
            # In an unlabelled file a stray label lands in the last channel: say why it is read so.
            last_of_unlabelled = not labelled and index == len(fields)
            _explain_bad_channel(source, lineno, index, field, last_of_unlabelled)
        if channels and len(values) != len(channels[0]):
            raise _error(
                source,
                lineno,
                f"channel {index} has {len(values)} values but channel 1 has "
                f"{len(channels[0])} (the channels of a sample must have the same length)",
            )
        channels.append(values)
    with np.errstate(over="ignore"):  # an overflow to inf is caught below, with its line
        sample = np.ascontiguousarray(np.array(channels, dtype=np.float64).T, dtype=np.float32)
    if not np.isfinite(sample).all():
        raise _error(source, lineno, "a value is too large for float32")
    return sample


def _explain_bad_channel(
    source: str, lineno: int, index: int, field: str, last_of_unlabelled: bool
) -> NoReturn:
    """Raise the error for the first value of a channel that failed the fast number check."""
    for position, value in enumerate(field.split(","), start=1):
        text = value.strip()
        where = f"value {position} of channel {index}"
        if not text:
            raise _error(source, lineno, f"{where} is empty")
        if text.lower() in _MISSING:
            raise _error(
                source, lineno, f"{where} is {_show(text)}: missing values are not supported"
            )
        if not _NUMBER_RE.fullmatch(text):
            hint = ""
            if text.startswith("("):
                hint = " (time-stamped values are not supported)"
            elif last_of_unlabelled:
                hint = " (the file declares no class labels, so every ':' field is a channel)"
            raise _error(source, lineno, f"{where} is {_show(text)}, not a number{hint}")
    # Unreachable: the channel failed the whole-channel pattern, so one value must fail.
    raise _error(source, lineno, f"channel {index} is not a list of numbers")


def _error(source: str, lineno: int, message: str) -> DataError:
    return DataError(f"{source}, line {max(lineno, 1)}: {message}")


def _show(text: str, limit: int = 40) -> str:
    """A value quoted for a one-line message, cut short so a huge line cannot flood it."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)
