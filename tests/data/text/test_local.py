"""Local csv / tsv / jsonl data sets."""

from __future__ import annotations

import json

import pytest

from ablate.data.text.raw import read_local
from ablate.exceptions import ConfigError, DataError


def test_local_csv_with_string_labels(tmp_path):
    path = tmp_path / "reviews.csv"
    # With a byte-order mark, as spreadsheet programs save UTF-8 CSV files.
    path.write_text('\ufeffreview,sentiment\n"Great, really great",pos\nbad,neg\n"meh",neutral\n')
    corpus = read_local(f"csv:{path}", text_col="review", label_col="sentiment")
    assert corpus.class_names == ["neg", "neutral", "pos"]
    assert corpus.train.labels.tolist() == [2, 0, 1]
    assert corpus.train.texts[0] == "Great, really great"
    assert corpus.val is None and corpus.test is None


def test_local_jsonl_with_int_labels_sorts_numerically(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"text": "a", "label": 10}, {"text": "b", "label": 2}, {"text": None, "label": 2.0}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    corpus = read_local(f"jsonl:{path}")
    assert corpus.class_names == ["2", "10"]
    assert corpus.train.labels.tolist() == [1, 0, 0]
    assert corpus.train.texts[2] == ""


def test_local_tsv_directory_of_split_files(tmp_path):
    (tmp_path / "train.tsv").write_text('text\tlabel\nsay "hi"\tgreet\nbye\tpart\n')
    (tmp_path / "dev.tsv").write_text("text\tlabel\nhello\tgreet\n")
    (tmp_path / "test.tsv").write_text("text\tlabel\nfarewell\tpart\nhey\tgreet\n")
    corpus = read_local(f"tsv:{tmp_path}")
    assert corpus.class_names == ["greet", "part"]
    assert corpus.train.texts[0] == 'say "hi"'
    assert corpus.val.texts == ["hello"] and corpus.test.labels.tolist() == [1, 0]


def test_local_errors_name_file_column_and_choices(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("sentence,y\nhello,1\n")
    with pytest.raises(DataError) as err:
        read_local(f"csv:{path}")
    message = str(err.value)
    assert str(path) in message and "'text'" in message and "sentence, y" in message
    assert "\n" not in message
    with pytest.raises(DataError, match="no column 'label'"):
        read_local(f"csv:{path}", text_col="sentence")
    with pytest.raises(DataError, match="does not exist"):
        read_local(f"csv:{tmp_path / 'missing.csv'}")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="no train.jsonl"):
        read_local(f"jsonl:{tmp_path / 'folder'}")
    path.write_text("text,label\nhello,\n")
    with pytest.raises(DataError, match="row 1 has no value in label column"):
        read_local(f"csv:{path}")
    with pytest.raises(ConfigError):
        read_local("xml:/x")
