"""IAM On-Line Handwriting Database (Liwicki & Bunke 2005), the data of Graves 2013's handwriting
experiments, from its manual download, in data/handwriting.py's format: one example per text line,
strokes (T, 3) = (dx, dy, end_of_stroke) with y up, and the line's transcription.

The builder reads what the user put in the manual directory (`<data_dir>/downloads/manual/`), as
the archives of https://fki.tic.heia-fr.ch/databases/iam-on-line-handwriting-database extract:
  lineStrokes/a01/a01-000/a01-000u-01.xml   pen points of each line (<StrokeSet><Stroke><Point
                                            x= y= time=/>...), lineStrokes-all.tar.gz
  ascii/a01/a01-000/a01-000u.txt            each form's transcription: after the "CSR:" line,
                                            its text lines in order (line k <-> file -0k.xml),
                                            ascii-all.tar.gz
  trainset.txt, testset_v.txt, testset_t.txt, testset_f.txt
                                            the task-1 split (IAM-OnDB-t1): one form or line
                                            id per line (e.g. a01-000u or a01-000u-01)
Each split file becomes a split of the same name. Graves trains on trainset + testset_t +
testset_f (the training set, the test set and the larger validation set) and reports on
testset_v (the smaller validation set). Lines without a transcription are left out (counted in
the log); a line's first offset is zero (it starts where its first point is).
"""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from segattn_jax.data.handwriting import line_features

SPLITS = ("trainset", "testset_v", "testset_t", "testset_f")


def read_line(path: epath.Path) -> tuple[np.ndarray, int]:
    """A lineStrokes XML file -> (T, 3) float32 rows (dx, dy, end_of_stroke), y up, and the
    writerID it gives (-1 where it has none)."""
    root = ElementTree.fromstring(path.read_bytes())
    writer = next((element.get("writerID") for element in root.iter()
                   if "writerID" in element.attrib), "-1")
    strokes = [np.array([[float(p.get("x")), -float(p.get("y"))] for p in stroke.iter("Point")])
               for stroke in root.iter("Stroke")]
    strokes = [s for s in strokes if len(s)]
    if not strokes:
        raise ValueError(f"{path} has no pen points (<Stroke><Point x= y=/>).")
    points = np.concatenate(strokes)
    end = np.zeros(len(points), np.float32)
    end[np.cumsum([len(s) for s in strokes]) - 1] = 1.0
    offsets = np.diff(points, axis=0, prepend=points[:1])
    strokes = np.concatenate([offsets, end[:, None]], axis=1).astype(np.float32)
    return strokes, int(writer) if writer.lstrip("-").isdigit() else -1


def read_transcription(path: epath.Path) -> list[str]:
    """The text lines after "CSR:" in a form's ascii file."""
    lines = path.read_bytes().decode("latin-1").splitlines()  # the files are ISO-8859-1
    if "CSR:" not in [line.strip() for line in lines]:
        raise ValueError(f"{path} has no 'CSR:' section (the IAM-OnDB ascii format).")
    start = [line.strip() for line in lines].index("CSR:") + 1
    return [line.strip() for line in lines[start:] if line.strip()]


class IamOndb(tfds.core.GeneratorBasedBuilder):
    """IAM-OnDB text lines as pen trajectories (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Register at https://fki.tic.heia-fr.ch/databases/iam-on-line-handwriting-database, download
    lineStrokes-all.tar.gz, ascii-all.tar.gz and the task-1 split (trainset.txt, testset_v.txt,
    testset_t.txt, testset_f.txt), and extract them into the manual directory so that it holds
    lineStrokes/, ascii/ and the four split files.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({**line_features(),
                                                 "line_id": tfds.features.Text()}),
            homepage="https://fki.tic.heia-fr.ch/databases/iam-on-line-handwriting-database")

    def _split_generators(self, dl_manager):
        manual = epath.Path(dl_manager.manual_dir)
        needed = [manual / "lineStrokes", manual / "ascii", *(manual / f"{s}.txt" for s in SPLITS)]
        missing = [str(p) for p in needed if not p.exists()]
        if missing:
            raise FileNotFoundError(f"iam_ondb needs {', '.join(missing)}. "
                                    + " ".join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
        lines = {path.stem: path for path in sorted((manual / "lineStrokes").glob("*/*/*.xml"))}
        return {split: self._generate_examples(manual, self._ids(manual / f"{split}.txt", lines),
                                               lines)
                for split in SPLITS}

    @staticmethod
    def _ids(split_file: epath.Path, lines: dict[str, epath.Path]) -> list[str]:
        """The line ids a split file names (by line id, or by form id for all its lines)."""
        listed = {line.strip() for line in split_file.read_text().splitlines() if line.strip()}
        return [i for i in lines if i in listed or i.rsplit("-", 1)[0] in listed]

    def _generate_examples(self, manual: epath.Path, ids: list[str], lines: dict[str, epath.Path]):
        untranscribed = 0
        transcriptions: dict[str, list[str]] = {}
        for line_id in ids:
            form = line_id.rsplit("-", 1)[0]  # a01-000u
            if form not in transcriptions:
                parts = form.split("-")  # ascii/a01/a01-000/a01-000u.txt
                path = manual / "ascii" / parts[0] / f"{parts[0]}-{parts[1][:3]}" / f"{form}.txt"
                transcriptions[form] = read_transcription(path) if path.exists() else []
            index = int(line_id.rsplit("-", 1)[1]) - 1
            if index >= len(transcriptions[form]):
                untranscribed += 1
                continue
            strokes, writer = read_line(lines[line_id])
            yield line_id, {"strokes": strokes, "text": transcriptions[form][index],
                            "writer": writer, "line_id": line_id}
        if untranscribed:
            logging.warning("iam_ondb: %d lines have no transcription and were left out.",
                            untranscribed)
