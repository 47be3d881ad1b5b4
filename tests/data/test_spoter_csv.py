"""SPOTER's skeleton CSVs: layout, 0-based labels, SPOTER's body and hand normalisation (checked
against a frame-by-frame re-statement of its algorithm), and each refusal with its line."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from kdlab.data.spoter_csv import BODY_JOINTS, HAND_JOINTS, JOINTS, read_spoter_csv
from kdlab.errors import DataError

J = {name: index for index, name in enumerate(JOINTS)}


def cell(values) -> str:
    """A per-frame list as SPOTER's CSVs hold it: Python's str() of a list of floats."""
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def columns() -> list[str]:
    # Not SPOTER's joint order, and with the extra columns its CSVs carry: the reader must
    # find columns by name.
    names = [f"{joint}_{axis}" for joint in reversed(JOINTS) for axis in "YX"]
    return ["video_fps", *names[:50], "labels", *names[50:], "video_size_width"]


def write_csv(path, videos, labels, header=None, override=None) -> None:
    """Write (T, 54, 2) videos as a SPOTER CSV; `override` maps (video, column) -> cell text."""
    header = header or columns()
    override = override or {}
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for v, (video, label) in enumerate(zip(videos, labels, strict=True)):
            row = []
            for name in header:
                if (v, name) in override:
                    row.append(override[(v, name)])
                elif name == "labels":
                    row.append(str(label))
                elif name.endswith(("_X", "_Y")):
                    spoter = name.replace("_left_", "_0_").replace("_right_", "_1_")
                    row.append(cell(video[:, J[spoter[:-2]], "XY".index(name[-1])]))
                else:
                    row.append("25")
            writer.writerow(row)


def random_videos(seed=0, lengths=(5, 3, 8)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.05, 0.95, size=(t, len(JOINTS), 2)) for t in lengths]


@pytest.fixture
def videos():
    return random_videos()


def test_joints_are_spoters_54_in_its_order():
    assert len(JOINTS) == 54 and len(set(JOINTS)) == 54
    assert JOINTS[:12] == BODY_JOINTS and BODY_JOINTS[0] == "nose" and JOINTS[11] == "leftWrist"
    assert JOINTS[12:33] == tuple(f"{j}_0" for j in HAND_JOINTS)
    assert JOINTS[33:] == tuple(f"{j}_1" for j in HAND_JOINTS)
    assert JOINTS[12] == "wrist_0" and JOINTS[53] == "thumbCMC_1"


def test_shapes_placement_and_zero_based_labels(tmp_path, videos):
    path = tmp_path / "train.csv"
    write_csv(path, videos, [3, 1, 2])
    data = read_spoter_csv(path)
    assert [s.shape for s in data.series] == [(5, 108), (3, 108), (8, 108)]
    assert all(s.dtype == np.float32 for s in data.series)
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [2, 0, 1]
    # Joint j's x at frame t is column 2j, its y column 2j+1: SPOTER's (T, 54, 2) flattened.
    j = J["indexTip_1"]
    assert data.series[2][6, 2 * j] == np.float32(videos[2][6, j, 0])
    assert data.series[2][6, 2 * j + 1] == np.float32(videos[2][6, j, 1])
    for video, series in zip(videos, data.series, strict=True):
        np.testing.assert_array_equal(series, video.reshape(len(video), -1).astype(np.float32))


def test_left_right_column_names_are_read_as_hands_0_and_1(tmp_path, videos):
    header = [name.replace("_0_", "_left_").replace("_1_", "_right_") for name in columns()]
    path = tmp_path / "lr.csv"
    write_csv(path, videos, [1, 2, 3], header=header)
    data = read_spoter_csv(path)
    j = J["thumbTip_0"]
    assert data.series[0][1, 2 * j] == np.float32(videos[0][1, j, 0])


def spoter_reference(video: np.ndarray) -> np.ndarray:
    """SPOTER's normalize_single_dict (body, then hands) restated frame by frame, joint by joint,
    as its code walks them: the oracle the vectorised reader must agree with."""
    v = video.copy()
    last_box = None
    for t in range(len(v)):
        ls, rs = v[t, J["leftShoulder"]], v[t, J["rightShoulder"]]
        neck, nose, eye = v[t, J["neck"]], v[t, J["nose"]], v[t, J["leftEye"]]
        if (ls[0] == 0 or rs[0] == 0) and (neck[0] == 0 or nose[0] == 0):
            if last_box is None:
                continue
            box = last_box
        else:
            if ls[0] != 0 and rs[0] != 0:
                head = ((ls[0] - rs[0]) ** 2 + (ls[1] - rs[1]) ** 2) ** 0.5
            else:
                head = ((neck[0] - nose[0]) ** 2 + (neck[1] - nose[1]) ** 2) ** 0.5
            top = eye[1] + head
            box = last_box = (neck[0] - 3 * head, top, neck[0] + 3 * head, top - 6 * head)
        left, top, right, bottom = (0.0 if c < 0 else c for c in box)
        for j in range(len(BODY_JOINTS)):
            if v[t, j, 0] == 0:
                continue
            if right - left == 0 or top - bottom == 0:
                break
            v[t, j] = ((v[t, j, 0] - left) / (right - left), (v[t, j, 1] - bottom) / (top - bottom))
    for hand in (0, 1):
        joints = range(12 + 21 * hand, 33 + 21 * hand)
        for t in range(len(v)):
            xs = [v[t, j, 0] for j in joints if v[t, j, 0] != 0]
            ys = [v[t, j, 1] for j in joints if v[t, j, 1] != 0]
            if not xs or not ys:
                continue
            width, height = max(xs) - min(xs), max(ys) - min(ys)
            if width > height:
                dx = 0.1 * width
                dy = dx + (width - height) / 2
            else:
                dy = 0.1 * height
                dx = dy + (height - width) / 2
            sx, sy, ex, ey = min(xs) - dx, min(ys) - dy, max(xs) + dx, max(ys) + dy
            for j in joints:
                if v[t, j, 0] == 0 or ex - sx == 0 or sy - ey == 0:
                    continue
                v[t, j] = ((v[t, j, 0] - sx) / (ex - sx), (v[t, j, 1] - sy) / (ey - sy))
    return v


def with_gaps(seed: int) -> list[np.ndarray]:
    """Random videos with SPOTER's zeros: undetected joints, frames without shoulders or neck
    (some before any frame with a box), single-point hands, all-zero hands, clipped boxes."""
    rng = np.random.default_rng(seed)
    out = []
    for length in (12, 7, 20):
        v = rng.uniform(0.0, 1.0, size=(length, len(JOINTS), 2))
        v[rng.random(v.shape[:2]) < 0.15] = 0  # joint not detected
        v[..., 0][rng.random(v.shape[:2]) < 0.05] = 0  # x alone is 0
        v[..., 1][rng.random(v.shape[:2]) < 0.05] = 0  # y alone is 0
        for t in rng.choice(length, size=length // 3, replace=False):
            v[t, [J["leftShoulder"], J["neck"]], 0] = 0  # no box of its own
        v[0, [J["rightShoulder"], J["nose"]], 0] = 0  # the first frame has no box
        v[1, 33:54] = 0  # hand 1 not seen
        v[2, 12:33] = 0
        v[2, J["wrist_0"]] = (0.4, 0.6)  # a single point: a zero-size square
        v[3, J["neck"], 0] = 0.02  # a box clipped at x = 0
        out.append(v)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_normalisation_matches_spoters_algorithm(tmp_path, seed):
    videos = with_gaps(seed)
    path = tmp_path / "gaps.csv"
    write_csv(path, videos, [1, 2, 3])
    data = read_spoter_csv(path, normalize=True)
    for video, series in zip(videos, data.series, strict=True):
        expected = spoter_reference(video).reshape(len(video), -1)
        np.testing.assert_allclose(series, expected, rtol=1e-6, atol=1e-6)


def body_frame() -> np.ndarray:
    """One frame: neck (0.5, 0.6), shoulders 0.1 apart, left eye at y 0.7; so the body box is
    x 0.2..0.8 (neck.x -/+ 3h) and y 0.2..0.8 (eye.y - 5h .. eye.y + h)."""
    frame = np.zeros((1, len(JOINTS), 2))
    frame[0, J["neck"]] = (0.5, 0.6)
    frame[0, J["nose"]] = (0.5, 0.65)
    frame[0, J["leftShoulder"]] = (0.55, 0.55)
    frame[0, J["rightShoulder"]] = (0.45, 0.55)
    frame[0, J["leftEye"]] = (0.52, 0.7)
    frame[0, J["rightEar"]] = (0.2, 0.8)  # the box's top-left corner
    frame[0, J["leftEar"]] = (0.8, 0.2)  # its bottom-right corner
    return frame


def xy(series: np.ndarray, t: int, joint: str) -> tuple[float, float]:
    return tuple(series[t, 2 * J[joint] : 2 * J[joint] + 2].tolist())


def read_one(tmp_path, video, normalize=True) -> np.ndarray:
    path = tmp_path / "one.csv"
    write_csv(path, [video], [1])
    return read_spoter_csv(path, normalize=normalize).series[0]


def test_body_box_maps_onto_the_unit_square(tmp_path):
    series = read_one(tmp_path, body_frame())
    assert xy(series, 0, "rightEar") == pytest.approx((0.0, 1.0), abs=1e-6)
    assert xy(series, 0, "leftEar") == pytest.approx((1.0, 0.0), abs=1e-6)
    assert xy(series, 0, "neck") == pytest.approx((0.5, 0.4 / 0.6), abs=1e-6)
    assert xy(series, 0, "rightElbow") == (0.0, 0.0)  # not detected: stays 0


def test_body_box_is_clipped_at_zero_and_falls_back_to_neck_nose(tmp_path):
    frame = body_frame()
    frame[0, J["neck"]] = (0.1, 0.6)  # box x from 0.1 - 0.3 < 0, clipped to 0, to 0.4
    assert xy(read_one(tmp_path, frame), 0, "neck")[0] == pytest.approx(0.25, abs=1e-6)
    frame = body_frame()
    frame[0, J["leftShoulder"]] = 0  # head metric: neck-nose distance 0.05, box x 0.35..0.65
    frame[0, J["rightEar"]] = (0.35, 0.75)  # top-left again: eye.y + 0.05
    assert xy(read_one(tmp_path, frame), 0, "rightEar") == pytest.approx((0.0, 1.0), abs=1e-6)


def test_frames_without_a_box_reuse_the_last_one_or_stay_raw(tmp_path):
    video = np.repeat(body_frame(), 3, axis=0)
    video[0, [J["leftShoulder"], J["neck"]], 0] = 0  # no box, and none before it: raw
    video[2, [J["leftShoulder"], J["neck"]], 0] = 0  # no box: frame 1's box
    video[2, J["rightEar"]] = (0.5, 0.5)
    series = read_one(tmp_path, video)
    assert xy(series, 0, "leftEar") == pytest.approx((0.8, 0.2))
    assert xy(series, 1, "leftEar") == pytest.approx((1.0, 0.0), abs=1e-6)
    assert xy(series, 2, "rightEar") == pytest.approx((0.5, 0.5), abs=1e-6)


def test_hand_box_becomes_a_centred_square(tmp_path):
    video = body_frame()
    rng = np.random.default_rng(4)
    hand = slice(J["wrist_0"], J["thumbCMC_0"] + 1)
    video[0, hand, 0] = rng.uniform(0.3, 0.5, size=21)  # wider (0.2) than tall (<= 0.05)
    video[0, hand, 1] = rng.uniform(0.40, 0.45, size=21)
    video[0, J["indexTip_0"]] = 0  # not detected: stays 0 and is left out of the box
    series = read_one(tmp_path, video).reshape(1, 54, 2)[0]
    seen = [j for j in range(J["wrist_0"], J["thumbCMC_0"] + 1) if j != J["indexTip_0"]]
    x, y = series[seen, 0], series[seen, 1]
    # The square is 1.2 x the longer side: that side spans 1/12 .. 11/12, both centred.
    assert (x.min(), x.max()) == pytest.approx((1 / 12, 11 / 12), abs=1e-6)
    assert (y.min() + y.max()) / 2 == pytest.approx(0.5, abs=1e-6)
    assert y.max() - y.min() < x.max() - x.min()
    assert series[J["indexTip_0"]].tolist() == [0.0, 0.0]
    # Hand 1 is all zeros: nothing to normalise. The body is normalised on its own.
    assert not series[J["wrist_1"] :].any()
    assert series[J["leftEar"]].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


def test_hand_of_one_point_is_left_as_it_is(tmp_path):
    video = body_frame()
    video[0, J["wrist_1"]] = (0.3, 0.4)
    series = read_one(tmp_path, video)
    assert xy(series, 0, "wrist_1") == pytest.approx((0.3, 0.4))


def test_without_normalize_values_are_untouched(tmp_path):
    series = read_one(tmp_path, body_frame(), normalize=False)
    assert xy(series, 0, "leftEar") == pytest.approx((0.8, 0.2))


def refusal(path, line: int, match: str) -> None:
    with pytest.raises(DataError) as info:
        read_spoter_csv(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}, line {line}"), message
    assert re.search(match, message), message


def test_missing_joint_or_label_column_is_named(tmp_path, videos):
    path = tmp_path / "cols.csv"
    write_csv(path, videos, [1, 2, 3], header=[c for c in columns() if c != "thumbCMC_1_Y"])
    refusal(path, 1, r"no column 'thumbCMC_1_Y';")
    write_csv(path, videos, [1, 2, 3], header=[c for c in columns() if c != "labels"])
    refusal(path, 1, r"no column 'labels'")
    write_csv(path, videos, [1, 2, 3], header=[c for c in columns() if not c.startswith("n")])
    refusal(path, 1, r"no column 'nose_X' \(and 3 more\)")


@pytest.mark.parametrize(
    ("column", "text", "match"),
    [
        ("nose_X", "[0.1, abc, 0.3]", "nose_X is '\\[0.1, abc, 0.3\\]', not a list of numbers"),
        ("neck_Y", "[0.1, nan, 0.3]", "neck_Y is .*not a list of numbers"),
        ("wrist_0_X", "0.1, 0.2, 0.3", "wrist_0_X is .*not a list of numbers"),
        ("wrist_0_X", "", "wrist_0_X is '', not a list of numbers"),
        ("leftEye_Y", "[0.1, 0.2]", "leftEye_X has 3 values but leftEye_Y has 2"),
        ("ringTip_1_X", "[0.1, 0.2]", "ringTip_1_X has 2 values but ringTip_1_Y has 3"),
        ("labels", "0", "label '0' is not an integer >= 1"),
        ("labels", "-2", "label '-2' is not an integer >= 1"),
        ("labels", "2.5", "label '2.5' is not an integer >= 1"),
        ("labels", "sign", "label 'sign' is not an integer >= 1"),
    ],
)
def test_bad_cells_are_refused_with_their_line(tmp_path, videos, column, text, match):
    path = tmp_path / "bad.csv"
    write_csv(path, videos, [1, 2, 3], override={(1, column): text})
    refusal(path, 3, r"\(video 2\): " + match)


def test_joints_with_different_frame_counts_are_refused(tmp_path, videos):
    path = tmp_path / "ragged.csv"
    two = cell([0.1, 0.2])
    write_csv(
        path, videos, [1, 2, 3], override={(2, "middleMCP_0_X"): two, (2, "middleMCP_0_Y"): two}
    )
    refusal(path, 4, r"\(video 3\): middleMCP_0_X has 2 frames but nose_X has 8")


def test_a_video_without_frames_is_refused(tmp_path, videos):
    path = tmp_path / "empty_video.csv"
    write_csv(path, videos, [1, 2, 3], override={(0, "nose_X"): "[]", (0, "nose_Y"): "[]"})
    refusal(path, 2, "nose_X is an empty list")


def test_empty_file_and_header_only_file_are_refused(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    refusal(path, 1, "the file is empty")
    with open(path, "w", newline="") as f:
        csv.writer(f).writerow(columns())
    refusal(path, 1, "no videos after the header row")


def test_a_row_with_too_few_fields_is_refused(tmp_path, videos):
    path = tmp_path / "short.csv"
    write_csv(path, videos, [1, 2, 3])
    with open(path, "a", newline="") as f:
        f.write("1,2,3\n")
    refusal(path, 5, r"\(video 4\): 3 fields, but the header has 111")
