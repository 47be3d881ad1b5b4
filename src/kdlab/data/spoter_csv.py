"""Reader for SPOTER's skeleton CSVs (sign-language pose sequences, one video per row).

SPOTER (Bohacek & Hruz, WACV 2022 workshops; github.com/matyasbohacek/spoter) publishes the
poses of WLASL100 and LSA64 as CSV files of this shape:

* a header row; then one row per video;
* for each of 54 joints (see `JOINTS`) two columns, `<joint>_X` and `<joint>_Y`, each cell a
  per-frame list written as Python prints it, e.g. `"[0.51, 0.52, 0.5]"`; a joint the pose
  estimator did not find in a frame is written as 0;
* a `labels` column of 1-based class indices. Other columns (`video_fps`, ...) are ignored.

The joints are SPOTER's 12 body joints, then its 21 hand joints with the suffix `_0`, then the
same 21 with `_1` (hand 0 is the left hand, 1 the right: SPOTER's loader renames `_left_` to
`_0_` and `_right_` to `_1_` in column names, and so does this reader).

Layout: each video becomes a float32 array of shape (T, 108) whose row t is
`x0, y0, x1, y1, ..., x53, y53` for the joints in `JOINTS` order: x and y of one joint are
interleaved, not all x then all y. That is SPOTER's tensor layout: its loader builds
(T, 54, 2) arrays with `[..., 0] = X` and `[..., 1] = Y`, and its model flattens them from dim 1,
so a model trained on this layout sees the inputs SPOTER's model sees. Labels become 0-based
int64 (the file's value minus 1), as SPOTER's dataset does.

`normalize=True` applies SPOTER's per-frame normalisations, those its training dataset applies
(`normalize_single_dict` of `normalization/body_normalization.py`, then of
`hand_normalization.py`), re-implemented from their algorithm, quirks included:

* body: the head metric is the shoulder distance, or the neck-nose distance where a shoulder is
  missing (x == 0). The box spans x in [neck.x - 3h, neck.x + 3h] and y from
  leftEye.y + h (top) down to leftEye.y - 5h (bottom); each corner coordinate below 0 is set to
  0. Body joints become `(x - left) / (right - left)` and `(y - bottom) / (top - bottom)`, so the
  box maps onto the unit square. A frame with neither both shoulders nor both neck and nose
  reuses the previous frame's box, or stays as it is if no earlier frame had one; a frame whose
  box has zero width or height stays as it is. SPOTER marks such videos "invalid", but its
  dictionary is edited in place, so the frames it did normalise stay normalised: so here too.
* hands, each on its own: the nonzero x values and the nonzero y values (filtered separately)
  of the hand's 21 joints give its bounding box; the box is grown into a square 1.2 times its
  longer side, centred on it, and joints become `(v - low) / (high - low)` on both axes, so the
  hand's own box lands centred in the unit square. A frame with no nonzero value on an axis, or
  a square of zero size, stays as it is.
* in both, a joint whose x is 0 (not detected) is left at 0.

SPOTER's dataset then subtracts 0.5 from every value; that centring is not part of the
normalisation and is left to the caller, as is SPOTER's augmentation.

Anything else is refused with one `DataError` line naming the file and the line: a missing
joint or `labels` column, a cell that is not a list of numbers, X and Y lists of different
lengths, joints of one video with different frame counts, a label that is not an integer >= 1,
a file without videos.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from pathlib import Path

import numpy as np

from kdlab.data.ts_format import read_utf8
from kdlab.errors import DataError

BODY_JOINTS: tuple[str, ...] = (
    "nose",
    "neck",
    "rightEye",
    "leftEye",
    "rightEar",
    "leftEar",
    "rightShoulder",
    "leftShoulder",
    "rightElbow",
    "leftElbow",
    "rightWrist",
    "leftWrist",
)
HAND_JOINTS: tuple[str, ...] = (
    "wrist",
    "indexTip",
    "indexDIP",
    "indexPIP",
    "indexMCP",
    "middleTip",
    "middleDIP",
    "middlePIP",
    "middleMCP",
    "ringTip",
    "ringDIP",
    "ringPIP",
    "ringMCP",
    "littleTip",
    "littleDIP",
    "littlePIP",
    "littleMCP",
    "thumbTip",
    "thumbIP",
    "thumbMP",
    "thumbCMC",
)
JOINTS: tuple[str, ...] = (
    BODY_JOINTS + tuple(f"{j}_0" for j in HAND_JOINTS) + tuple(f"{j}_1" for j in HAND_JOINTS)
)
"""The 54 joints in SPOTER's order: body, then every joint of hand 0, then of hand 1."""

LABEL_COLUMN = "labels"

_BODY = {name: index for index, name in enumerate(BODY_JOINTS)}
_HANDS = (
    np.arange(len(BODY_JOINTS), len(BODY_JOINTS) + len(HAND_JOINTS)),
    np.arange(len(BODY_JOINTS) + len(HAND_JOINTS), len(JOINTS)),
)
# Plain decimal numbers: Python's float() would also take "nan", "inf" and "1_0", which
# SPOTER's ast.literal_eval does not.
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_LIST_RE = re.compile(rf"\s*\[\s*(?:{_NUMBER}\s*(?:,\s*{_NUMBER}\s*)*)?\]\s*")
_LABEL_RE = re.compile(r"\s*\+?\d+\s*")


@dataclasses.dataclass(frozen=True)
class SkeletonData:
    """The videos of one SPOTER CSV, in file order."""

    series: list[np.ndarray]  # one (T_i, 108) float32 per video: x0, y0, x1, y1, ... per frame
    labels: np.ndarray  # int64, 0-based (the file's labels minus 1)


def read_spoter_csv(path: str | Path, normalize: bool = False) -> SkeletonData:
    """Read a SPOTER skeleton CSV; `normalize` applies SPOTER's body and hand normalisation.

    Raises `DataError` (one line: file, line, problem) for a file this reader cannot trust.
    """
    path = Path(path)
    text = read_utf8(path)

    # newline="" as the csv module asks: line ends inside quoted cells stay part of the cell.
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}, line 1: the file is empty (expected SPOTER's header row)")
        columns = _columns(path, header)
        series: list[np.ndarray] = []
        labels: list[int] = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line, which pandas (and so SPOTER) skips as well
            line = reader.line_num
            where = f"{path}, line {line} (video {len(series) + 1})"
            if len(row) != len(header):
                raise DataError(f"{where}: {len(row)} fields, but the header has {len(header)}")
            labels.append(_label(where, row[columns[LABEL_COLUMN]]))
            frames = _frames(where, row, columns)
            if normalize:
                _normalize_body(frames)
                _normalize_hands(frames)
            series.append(frames.reshape(len(frames), -1).astype(np.float32))
    except csv.Error as exc:
        raise DataError(f"{path}, line {reader.line_num}: not valid CSV ({exc})") from None
    if not series:
        raise DataError(f"{path}, line 1: no videos after the header row")
    return SkeletonData(series, np.asarray(labels, dtype=np.int64))


def _columns(path: Path, header: list[str]) -> dict[str, int]:
    """Index of each needed column, after SPOTER's `_left_`/`_right_` -> `_0_`/`_1_` renaming."""
    needed = [f"{joint}_{axis}" for joint in JOINTS for axis in "XY"] + [LABEL_COLUMN]
    wanted = set(needed)
    index: dict[str, int] = {}
    for position, name in enumerate(header):
        name = name.strip().replace("_left_", "_0_").replace("_right_", "_1_")
        # Only a needed column must be unique; pandas' unnamed index columns may repeat.
        if name in index and name in wanted:
            raise DataError(f"{path}, line 1: column {name!r} appears twice")
        index.setdefault(name, position)
    missing = [name for name in needed if name not in index]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(
            f"{path}, line 1: no column {missing[0]!r}{more}; SPOTER's CSVs have <joint>_X and "
            f"<joint>_Y for each of its 54 joints and {LABEL_COLUMN!r}"
        )
    return index


def _label(where: str, cell: str) -> int:
    if not _LABEL_RE.fullmatch(cell) or int(cell) < 1:
        raise DataError(
            f"{where}: label {_show(cell)} is not an integer >= 1 (SPOTER's labels are 1-based)"
        )
    return int(cell) - 1


def _frames(where: str, row: list[str], columns: dict[str, int]) -> np.ndarray:
    """The video's joints as a float64 (T, 54, 2) array, x in [..., 0] and y in [..., 1]."""
    frames: np.ndarray | None = None
    first = ""
    for joint_index, joint in enumerate(JOINTS):
        xs = _values(where, f"{joint}_X", row[columns[f"{joint}_X"]])
        ys = _values(where, f"{joint}_Y", row[columns[f"{joint}_Y"]])
        if len(xs) != len(ys):
            raise DataError(f"{where}: {joint}_X has {len(xs)} values but {joint}_Y has {len(ys)}")
        if frames is None:
            if not len(xs):
                raise DataError(f"{where}: {joint}_X is an empty list (a video needs a frame)")
            frames, first = np.empty((len(xs), len(JOINTS), 2)), joint
        elif len(xs) != len(frames):
            raise DataError(
                f"{where}: {joint}_X has {len(xs)} frames but {first}_X has {len(frames)} "
                "(every joint of a video must have the same number of frames)"
            )
        frames[:, joint_index, 0] = xs
        frames[:, joint_index, 1] = ys
    assert frames is not None  # JOINTS is not empty
    return frames


def _values(where: str, column: str, cell: str) -> np.ndarray:
    if not _LIST_RE.fullmatch(cell):
        raise DataError(
            f"{where}: {column} is {_show(cell)}, not a list of numbers like '[0.5, 0.25]'"
        )
    inner = cell.strip()[1:-1]
    if not inner.strip():
        return np.empty(0)
    # Safe after the pattern check: every item is a plain decimal number.
    return np.array(inner.split(","), dtype=np.float64)


def _normalize_body(frames: np.ndarray) -> None:
    """SPOTER's body normalisation of a (T, 54, 2) array, in place (see the module docstring)."""
    x, y = frames[..., 0], frames[..., 1]
    nose, neck, left_eye = _BODY["nose"], _BODY["neck"], _BODY["leftEye"]
    left_sh, right_sh = _BODY["leftShoulder"], _BODY["rightShoulder"]
    shoulders = (x[:, left_sh] != 0) & (x[:, right_sh] != 0)
    neck_nose = (x[:, neck] != 0) & (x[:, nose] != 0)
    # sqrt(dx**2 + dy**2) as SPOTER writes it (np.hypot rounds differently in the last bit).
    head = np.where(
        shoulders,
        np.sqrt((x[:, left_sh] - x[:, right_sh]) ** 2 + (y[:, left_sh] - y[:, right_sh]) ** 2),
        np.sqrt((x[:, neck] - x[:, nose]) ** 2 + (y[:, neck] - y[:, nose]) ** 2),
    )
    left = x[:, neck] - 3 * head
    top = y[:, left_eye] + head
    right = x[:, neck] + 3 * head
    bottom = top - 6 * head  # from the top before it is clipped, as SPOTER computes it
    box = np.stack([left, top, right, bottom], axis=1)

    # A frame without a box of its own reuses the last frame that had one (a forward fill);
    # frames before the first such frame keep no box at all.
    has_box = shoulders | neck_nose
    source = np.where(has_box, np.arange(len(frames)), -1)
    source = np.maximum.accumulate(source)
    usable = source >= 0
    box = box[np.maximum(source, 0)]
    box = np.where(box < 0, 0.0, box)  # the box may not leave the picture's lower-left corner
    left, top, right, bottom = box.T
    width, height = right - left, top - bottom
    usable &= (width != 0) & (height != 0)  # SPOTER gives up on a degenerate box's frame

    body = slice(0, len(BODY_JOINTS))
    with np.errstate(divide="ignore", invalid="ignore"):
        new_x = (x[:, body] - left[:, None]) / width[:, None]
        new_y = (y[:, body] - bottom[:, None]) / height[:, None]
    change = usable[:, None] & (x[:, body] != 0)
    x[:, body] = np.where(change, new_x, x[:, body])
    y[:, body] = np.where(change, new_y, y[:, body])


def _normalize_hands(frames: np.ndarray) -> None:
    """SPOTER's hand normalisation of a (T, 54, 2) array, in place (see the module docstring)."""
    for joints in _HANDS:
        x, y = frames[:, joints, 0], frames[:, joints, 1]
        seen_x, seen_y = x != 0, y != 0  # SPOTER filters each axis on its own zeros
        usable = seen_x.any(axis=1) & seen_y.any(axis=1)
        low_x = np.where(seen_x, x, np.inf).min(axis=1)
        high_x = np.where(seen_x, x, -np.inf).max(axis=1)
        low_y = np.where(seen_y, y, np.inf).min(axis=1)
        high_y = np.where(seen_y, y, -np.inf).max(axis=1)
        with np.errstate(invalid="ignore"):  # inf - inf in frames that are not usable
            width, height = high_x - low_x, high_y - low_y
            wide = width > height
            delta_x = np.where(wide, 0.1 * width, 0.1 * height + (height - width) / 2)
            delta_y = np.where(wide, 0.1 * width + (width - height) / 2, 0.1 * height)
            start_x, end_x = low_x - delta_x, high_x + delta_x
            start_y, end_y = low_y - delta_y, high_y + delta_y
            usable &= (end_x - start_x != 0) & (start_y - end_y != 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            new_x = (x - start_x[:, None]) / (end_x - start_x)[:, None]
            new_y = (y - start_y[:, None]) / (end_y - start_y)[:, None]
        change = usable[:, None] & seen_x
        frames[:, joints, 0] = np.where(change, new_x, x)
        frames[:, joints, 1] = np.where(change, new_y, y)


def _show(text: str, limit: int = 40) -> str:
    """A cell quoted for a one-line message, cut short so a long list cannot flood it."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)
