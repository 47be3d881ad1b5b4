"""The `.ts` (UEA/UCR archive) reader: small files in the archive's real layout, each refusal
with the line number it names."""

from __future__ import annotations

import re

import numpy as np
import pytest

from kdlab.data.ts_format import TsData, parse_ts, read_ts
from kdlab.errors import DataError

# Laid out like the archive's JapaneseVowels_TRAIN.ts: a comment block, the header, then
# 12-channel (here 3-channel) samples of unequal length with numeric labels.
MULTIVARIATE = """\
#A made-up multivariate problem in the layout of JapaneseVowels.
#
@problemName TinyVowels
@timeStamps false
@missing false
@univariate false
@dimensions 3
@equalLength false
@classLabel true 1 2 3
@data
1.0,2.0,3.0:4.0,5.0,6.0:7.0,8.0,9.0:1
-0.5,1e-3:3,+2.5E2:.25,10.:3

0,1,2,3:4,5,6,7:8,9,10,11:2
"""

UNIVARIATE = """\
# PickupGestureWiimoteZ-like: one channel, unequal lengths, two-digit labels
@problemName Pickup
@timeStamps false
@missing false
@univariate true
@equalLength false
@classLabel true 1 2 10
@data
0.885,0.846,0.808:10
1.0,0.962:2
"""


def header(*, dims: str = "", equal: str = "false", labels: str = "true A B") -> str:
    return (
        "@problemName Tiny\n@timeStamps false\n@missing false\n@univariate false\n"
        f"{dims}@equalLength {equal}\n@classLabel {labels}\n@data\n"
    )


def refusal(text: str, line: int, match: str) -> None:
    """parse_ts refuses `text` with one line that names the source, `line` and `match`."""
    with pytest.raises(DataError) as info:
        parse_ts(text, source="tiny.ts")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"tiny.ts, line {line}: "), message
    assert re.search(match, message), message


def test_multivariate_unequal_length_samples_are_time_first_float32():
    data = parse_ts(MULTIVARIATE)
    assert data.name == "TinyVowels"
    assert data.class_labels == ("1", "2", "3")
    assert data.labels == ["1", "3", "2"]
    assert [s.shape for s in data.series] == [(3, 3), (2, 3), (4, 3)]
    assert all(s.dtype == np.float32 and s.flags.c_contiguous for s in data.series)
    # Row t holds time step t of every channel: channel c is column c.
    np.testing.assert_array_equal(data.series[0], [[1, 4, 7], [2, 5, 8], [3, 6, 9]])
    np.testing.assert_allclose(data.series[1], [[-0.5, 3, 0.25], [1e-3, 250, 10]], rtol=1e-6)
    np.testing.assert_array_equal(data.series[2][:, 2], [8, 9, 10, 11])


def test_univariate_file_gives_one_channel():
    data = parse_ts(UNIVARIATE)
    assert [s.shape for s in data.series] == [(3, 1), (2, 1)]
    np.testing.assert_allclose(data.series[0][:, 0], [0.885, 0.846, 0.808], rtol=1e-6)
    assert data.labels == ["10", "2"]
    assert data.class_labels == ("1", "2", "10")  # header order, not sorted


def test_labels_and_name_keep_their_case_and_header_keys_do_not_matter():
    text = (
        "# comment\n@PROBLEMNAME BasicMotions\n@timestamps FALSE\n@Univariate False\n"
        "@equallength True\n@serieslength 2\n@CLASSLABEL true Standing Walking walking\n"
        "\n@DATA\n# a comment among the samples\n1,2:3,4:Walking\n5,6:7,8:walking\n"
        "9,10:11,12:Standing\n"
    )
    data = parse_ts(text)
    assert data.name == "BasicMotions"
    assert data.labels == ["Walking", "walking", "Standing"]
    assert data.class_labels == ("Standing", "Walking", "walking")


def test_missing_true_header_alone_is_accepted_and_aeon_dimension_spelling_is_read():
    text = header(dims="@dimension 2\n").replace("@missing false", "@missing True")
    data = parse_ts(text + "1,2:3,4:A\n")
    assert data.series[0].shape == (2, 2)


def test_unlabelled_file_reads_every_field_as_a_channel():
    data = parse_ts(header(labels="false") + "1,2:3,4\n5:6\n")
    assert data.labels == [] and data.class_labels == ()
    assert [s.shape for s in data.series] == [(2, 2), (1, 2)]


def test_crlf_lines_and_a_byte_order_mark_are_read(tmp_path):
    path = tmp_path / "crlf.ts"
    path.write_bytes(b"\xef\xbb\xbf" + UNIVARIATE.replace("\n", "\r\n").encode())
    data = read_ts(path)
    assert data.name == "Pickup" and data.labels == ["10", "2"]


def test_read_ts_matches_parse_ts_and_names_the_file(tmp_path):
    path = tmp_path / "Tiny_TRAIN.ts"
    path.write_text(MULTIVARIATE)
    data = read_ts(path)
    assert isinstance(data, TsData)
    assert data.labels == parse_ts(MULTIVARIATE).labels
    path.write_text(MULTIVARIATE.replace(":3\n", ":4\n"))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}, line 12: label '4'"):
        read_ts(path)


def test_unreadable_and_non_utf8_files_are_refused(tmp_path):
    with pytest.raises(DataError, match="cannot be read"):
        read_ts(tmp_path / "absent.ts")
    path = tmp_path / "latin1.ts"
    path.write_bytes(b"# ok\n# caf\xe9\n@data\n")
    with pytest.raises(DataError, match=r"line 2: not UTF-8"):
        read_ts(path)


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("# only a comment\n@problemName X\n", 2, "without an @data line"),
        ("", 1, "without an @data line"),
        ("@problemName X\n1,2:A\n@data\n", 2, "expected an @ header line"),
        ("@problemName X\n@timeStamps true\n@data\n", 2, "@timeStamps true is not supported"),
        ("@problemName X\n@targetLabel true\n@data\n1,2:0.5\n", 2, "regression"),
        ("@timeStamps maybe\n@data\n", 1, "needs true or false, got 'maybe'"),
        ("@classLabel true\n@data\n", 1, "must list the class labels"),
        ("@classLabel true a b a\n@data\n", 1, "'a' is declared twice"),
        ("@dimensions zero\n@data\n", 1, "whole number >= 1"),
        ("@data extra\n", 1, "@data takes no value"),
    ],
)
def test_header_refusals(text, line, match):
    refusal(text, line, match)


@pytest.mark.parametrize(
    ("sample", "match"),
    [
        ("1,?,3:4,5,6:A", "value 2 of channel 1 is '\\?': missing values are not supported"),
        ("1,2,3:4,NaN,6:A", "value 2 of channel 2 is 'NaN': missing values are not supported"),
        ("1,2,3:4,5,x6:A", "value 3 of channel 2 is 'x6', not a number"),
        ("1,2,inf:4,5,6:A", "'inf', not a number"),
        ("1,2,1_000:4,5,6:A", "'1_000', not a number"),
        ("1,,3:4,5,6:A", "value 2 of channel 1 is empty"),
        ("1,2,3::A", "channel 2 is empty"),
        ("1,2,3:4,5:A", "channel 2 has 2 values but channel 1 has 3"),
        ("1,2,3:4,5,6:C", "label 'C' is not declared in @classLabel \\(declared: A B\\)"),
        ("1,2,3:4,5,6:a", "label 'a' is not declared"),  # labels are case-sensitive
        ("1,2,3", "no class label"),
        ("(0,1),(1,2):A", "time-stamped values are not supported"),
        ("1e39:1:A", "too large for float32"),
        ("@seriesLength 3", "header line '@seriesLength 3' after @data"),
    ],
)
def test_sample_refusals_name_the_sample_line(sample, match):
    # The header takes lines 1-7; the blank line 8 is skipped, so the sample is on line 9.
    refusal(header() + "\n" + sample + "\n", 9, match)


def test_channel_count_must_match_the_first_sample():
    text = header() + "1,2:3,4:A\n1,2:A\n"
    refusal(text, 9, r"sample has 1 channel\(s\), but the first sample \(line 8\) has 2")


def test_channel_count_must_match_dimensions():
    refusal(header(dims="@dimensions 3\n") + "1,2:3,4:A\n", 9, "@dimensions on line 5 says 3")


def test_univariate_file_refuses_a_second_channel():
    text = UNIVARIATE + "1,2:3,4:1\n"
    refusal(text, 11, "@univariate true on line 5 says 1")


def test_equal_length_files_must_be_equal_length():
    refusal(header(equal="true") + "1,2:3,4:A\n1,2,3:4,5,6:B\n", 9, "first sample \\(line 8\\)")
    text = header(equal="true").replace("@data", "@seriesLength 3\n@data") + "1,2:3,4:A\n"
    refusal(text, 9, "@seriesLength on line 7 says 3")


def test_a_file_without_samples_is_refused_at_its_data_line():
    refusal(header() + "\n# nothing\n\n", 7, "no samples after @data")


def test_unlabelled_file_with_labels_explains_why_the_label_is_a_channel():
    refusal(header(labels="false") + "1,2:3,4:A\n", 8, "declares no class labels")
