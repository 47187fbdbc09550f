"""The IAM-OnDB builder on a fixture in the download's layout (lineStrokes XML, ascii
transcriptions, task-1 split files)."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from segattn_jax.data import iam_ondb

_STROKES = """<?xml version="1.0" encoding="ISO-8859-1"?>
<WhiteboardCaptureSession>
  <WhiteboardDescription><SensorLocation corner="top_left"/></WhiteboardDescription>
  <General><Form id="{form}" writerID="{writer}"/></General>
  <StrokeSet>{strokes}</StrokeSet>
</WhiteboardCaptureSession>"""


def _stroke(points) -> str:
    return "<Stroke colour=\"black\">" + "".join(
        f'<Point x="{x}" y="{y}" time="0.0"/>' for x, y in points) + "</Stroke>"


# form -> (writer, text lines, strokes of each line)
FORMS = {
    "a01-000u": (10158, ["A MOVE to stop", "Mr. Gaitskell"],
                 [[[(100, 500), (110, 490), (120, 500)], [(130, 480), (131, 470)]],
                  [[(50, 50), (60, 70)]]]),
    "a01-001w": (10159, ["nominating"], [[[(0, 0), (5, 5)]], [[(1, 1), (2, 2)]]]),  # 2nd: no text
    "b02-010": (10160, ["any more"], [[[(7, 7), (8, 9)]]]),
    "c03-003a": (10161, ["Labour"], [[[(3, 3), (4, 5)]]]),
}


def write_iam_ondb(manual) -> None:
    for form, (writer, texts, lines) in FORMS.items():
        group, number = form.split("-")
        folder = f"{group}-{number[:3]}"
        ascii_dir = manual / "ascii" / group / folder
        ascii_dir.mkdir(parents=True, exist_ok=True)
        (ascii_dir / f"{form}.txt").write_text("OCR:\n\nsome text\n\nCSR:\n\n" + "\n".join(texts))
        strokes_dir = manual / "lineStrokes" / group / folder
        strokes_dir.mkdir(parents=True, exist_ok=True)
        for k, strokes in enumerate(lines, start=1):
            (strokes_dir / f"{form}-{k:02d}.xml").write_text(_STROKES.format(
                form=form, writer=writer, strokes="".join(_stroke(s) for s in strokes)))
    # By form id, or by line id.
    for split, ids in {"trainset": ["a01-000u", "a01-001w"], "testset_v": ["b02-010-01"],
                       "testset_t": ["c03-003a"], "testset_f": ["c03-003a-01"]}.items():
        (manual / f"{split}.txt").write_text("\n".join(ids) + "\n")


def build_iam_ondb(tmp_path) -> tfds.core.DatasetBuilder:
    manual = tmp_path / "manual"
    write_iam_ondb(manual)
    builder = iam_ondb.IamOndb(data_dir=str(tmp_path / "data"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual)))
    return builder


def test_builder_reads_lines_as_offsets_with_pen_ups_and_their_transcriptions(tmp_path):
    builder = build_iam_ondb(tmp_path)
    assert {s: builder.info.splits[s].num_examples for s in iam_ondb.SPLITS} == {
        "trainset": 3, "testset_v": 1, "testset_t": 1, "testset_f": 1}  # a01-001w-02: no text
    lines = {e["line_id"].decode(): e for e in tfds.as_numpy(builder.as_dataset(split="trainset"))}
    assert sorted(lines) == ["a01-000u-01", "a01-000u-02", "a01-001w-01"]
    first = lines["a01-000u-01"]
    assert first["text"].decode() == "A MOVE to stop" and int(first["writer"]) == 10158
    # Offsets from the first point, y up (the tablet's y grows downwards), pen up after each
    # stroke's last point.
    np.testing.assert_array_equal(first["strokes"], [[0, 0, 0], [10, 10, 0], [10, -10, 1],
                                                     [10, 20, 0], [1, 10, 1]])
    assert lines["a01-000u-02"]["text"].decode() == "Mr. Gaitskell"


def test_missing_files_are_named_with_what_to_download(tmp_path):
    (tmp_path / "manual" / "ascii").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="needs .*lineStrokes.*lineStrokes-all.tar.gz"):
        iam_ondb.IamOndb(data_dir=str(tmp_path / "data")).download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
