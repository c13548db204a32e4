"""Named corpora: readers on files in each corpus's real format, checksums and fetching."""

from __future__ import annotations

import hashlib
import tarfile
import zipfile
from pathlib import Path

import pytest

from ablate.config import RunConfig
from ablate.data.text import load_text_data
from ablate.data.text.corpora import (
    CORPORA,
    CorpusSpec,
    RemoteFile,
    ensure_corpus,
    read_ag_news,
    read_dbpedia,
    read_imdb,
    read_sst2,
    read_trec,
    read_yelp_polarity,
)
from ablate.data.text.tokenizer import tokenize
from ablate.exceptions import DataError


def test_ag_news_reader(tmp_path):
    (tmp_path / "train.csv").write_text(
        '"3","Wall St. Bears Claw Back","Reuters - Short-sellers, Wall Street\'s dwindling\\band '
        'of ultra-cynics, are seeing green again."\n'
        '"2","Phelps Wins","Michael Phelps #39;s sixth gold, quot;great quot; swim"\n'
        '"1","Talks ""stall""","Diplomats meet &lt;again&gt;"\n',
        encoding="utf-8",
    )
    (tmp_path / "test.csv").write_text('"4","New chip","Intel unveils a chip"\n')
    corpus = read_ag_news(tmp_path)
    assert corpus.class_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert corpus.train.labels.tolist() == [2, 1, 0] and corpus.test.labels.tolist() == [3]
    assert corpus.val is None
    first, second, third = corpus.train.texts
    assert first.startswith("Wall St. Bears Claw Back Reuters - Short-sellers")
    assert "dwindling band" in first  # the backslash stood for a line break
    assert "Phelps's sixth gold" in second and '"great "' in second
    assert third.startswith('Talks "stall"')


def test_dbpedia_and_yelp_readers(tmp_path):
    base = tmp_path / "dbpedia_csv"
    base.mkdir()
    (base / "classes.txt").write_text("\n".join(
        ["Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder",
         "MeanOfTransportation", "Building", "NaturalPlace", "Village", "Animal", "Plant",
         "Album", "Film", "WrittenWork"]) + "\n")
    (base / "train.csv").write_text(
        '1,"E. D. Abbott Ltd"," Abbott of Farnham E D Abbott Limited was a British coachbuilding'
        ' business."\n14,"Some Book"," A novel."\n')
    (base / "test.csv").write_text('9,"Village X"," A village in Poland."\n')
    db = read_dbpedia(tmp_path)
    assert db.class_names[0] == "Company" and len(db.class_names) == 14
    assert db.train.labels.tolist() == [0, 13] and db.test.labels.tolist() == [8]
    assert db.train.texts[0].startswith("E. D. Abbott Ltd  Abbott of Farnham")

    ybase = tmp_path / "yelp_review_polarity_csv"
    ybase.mkdir()
    (ybase / "train.csv").write_text(
        '"1","Unfortunately, the frustration of being Dr. Goldberg\'s patient.\\nBad."\n'
        '"2","Been going to Dr. Goldberg for over 10 years. ""Great"" doctor."\n')
    (ybase / "test.csv").write_text('"2","Loved it"\n')
    yelp = read_yelp_polarity(tmp_path)
    assert yelp.class_names == ["negative", "positive"]
    assert yelp.train.labels.tolist() == [0, 1]
    assert yelp.train.texts[0].endswith("patient. Bad.")
    assert '"Great" doctor' in yelp.train.texts[1]

    (ybase / "test.csv").write_text('"7","bad class"\n')
    with pytest.raises(DataError, match=r"test.csv: class numbers must lie in 1\.\.2"):
        read_yelp_polarity(tmp_path)


def test_trec_reader(tmp_path):
    (tmp_path / "train_5500.label").write_bytes(
        b"DESC:manner How did serfdom develop in and then leave Russia ?\n"
        b"ENTY:cremat What films featured the character Popeye Doyle ?\n"
        b"LOC:other What is the sister\xf0city of Paris ?\n"
        b"HUM:ind Who wrote `` Hamlet '' ?\n"
    )
    (tmp_path / "TREC_10.label").write_bytes(b"NUM:date When was Ozzy Osbourne born ?\n\n")
    corpus = read_trec(tmp_path)
    assert corpus.class_names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert corpus.train.labels.tolist() == [1, 2, 4, 3] and corpus.test.labels.tolist() == [5]
    assert corpus.train.texts[0] == "How did serfdom develop in and then leave Russia ?"
    assert tokenize(corpus.train.texts[2]) == ["what", "is", "the", "sister", "city", "of",
                                               "paris", "?"]
    assert tokenize(corpus.train.texts[3]) == ["who", "wrote", '"', "hamlet", '"', "?"]
    (tmp_path / "TREC_10.label").write_text("BOGUS:x What ?\n")
    with pytest.raises(DataError, match="line 1 is not 'COARSE:fine question'"):
        read_trec(tmp_path)


def test_sst2_reader(tmp_path):
    base = tmp_path / "SST-2"
    base.mkdir()
    (base / "train.tsv").write_text(
        "sentence\tlabel\nhide new secretions from the parental units \t0\n"
        'the "best" film , it \'s a charming journey \t1\n'
    )
    (base / "dev.tsv").write_text("sentence\tlabel\nit 's a lovely film \t1\n")
    (base / "test.tsv").write_text("index\tsentence\n0\tno labels here\n")
    corpus = read_sst2(tmp_path)
    assert corpus.train.labels.tolist() == [0, 1] and corpus.test.labels.tolist() == [1]
    assert corpus.train.texts[1].startswith('the "best" film')  # quotes kept literally
    assert corpus.class_names == ["negative", "positive"]
    (base / "dev.tsv").write_text("text\tlabel\nx\t1\n")
    with pytest.raises(DataError, match="missing column sentence; columns: text, label"):
        read_sst2(tmp_path)


def _write_imdb(root: Path) -> None:
    reviews = {
        "train/pos/10_9.txt": "A wonderful film.<br /><br />Loved it.",
        "train/pos/2_8.txt": "Great acting.",
        "train/neg/1_1.txt": "Terrible.<br/>Awful plot.",
        "train/unsup/5_0.txt": "unlabelled, skipped",
        "test/pos/0_10.txt": "Brilliant.",
        "test/neg/3_2.txt": "Boring.",
    }
    for rel, text in reviews.items():
        path = root / "aclImdb" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "aclImdb" / "train" / "urls_pos.txt").write_text("http://example.invalid\n")


def test_imdb_reader(tmp_path):
    _write_imdb(tmp_path)
    corpus = read_imdb(tmp_path)
    # Numeric file order (2_8 before 10_9), and <br /> line breaks become spaces.
    assert corpus.train.texts == ["Terrible. Awful plot.", "Great acting.",
                                  "A wonderful film.  Loved it."]
    assert corpus.train.labels.tolist() == [0, 1, 1]
    assert corpus.test.labels.tolist() == [0, 1]


def test_known_corpora_use_published_checksums():
    assert set(CORPORA) == {"ag_news", "trec", "sst2", "imdb", "dbpedia", "yelp_polarity"}
    for spec in CORPORA.values():
        for remote in spec.files:
            assert remote.url.startswith("https://")
            assert remote.sha256 and len(remote.sha256) == 64


def test_missing_corpus_offline_says_where_and_how(tmp_path):
    cfg = RunConfig(dataset="imdb", data_dir=str(tmp_path), quiet=True)
    with pytest.raises(DataError) as err:
        load_text_data(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "imdb") in message and "aclImdb/train/pos" in message
    assert "--download" in message and "aclImdb_v1.tar.gz" in message
    assert not (tmp_path / "imdb" / "aclImdb_v1.tar.gz").exists()


def _imdb_archive(tmp_path: Path) -> Path:
    staging = tmp_path / "staging"
    _write_imdb(staging)
    archive = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(staging / "aclImdb", arcname="aclImdb")
    return archive


def test_ensure_corpus_downloads_verifies_and_extracts(tmp_path):
    archive = _imdb_archive(tmp_path)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    real = CORPORA["imdb"]
    spec = CorpusSpec(
        "imdb",
        (RemoteFile(archive.as_uri(), "aclImdb_v1.tar.gz", sha256=digest, extract=True),),
        real.required,
        real.reader,
    )
    data_dir = tmp_path / "data"
    root = ensure_corpus(spec, data_dir, download=True)
    assert (root / "aclImdb" / "train" / "pos" / "2_8.txt").is_file()
    assert len(spec.reader(root).train) == 3
    # A second call is offline and does nothing.
    archive.unlink()
    assert ensure_corpus(spec, data_dir, download=False) == root

    # A wrong checksum is refused and leaves nothing behind.
    bad = CorpusSpec("imdb", (RemoteFile((tmp_path / "x.tgz").as_uri(), "x.tgz",
                                         sha256="0" * 64, extract=True),), real.required,
                     real.reader)
    (tmp_path / "x.tgz").write_bytes(b"junk")
    with pytest.raises(DataError, match="checksum mismatch"):
        ensure_corpus(bad, tmp_path / "other", download=True)
    assert not (tmp_path / "other" / "imdb" / "x.tgz").exists()


def test_a_hand_placed_archive_is_verified_then_extracted(tmp_path):
    base = tmp_path / "data" / "sst2"
    base.mkdir(parents=True)
    archive = base / "SST-2.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("SST-2/train.tsv", "sentence\tlabel\ngood \t1\nbad \t0\n")
        zf.writestr("SST-2/dev.tsv", "sentence\tlabel\nfine \t1\n")
    real = CORPORA["sst2"]
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    ok = CorpusSpec("sst2", (RemoteFile("https://invalid.example/SST-2.zip", "SST-2.zip",
                                        sha256=digest, extract=True),), real.required,
                    real.reader)
    assert ensure_corpus(ok, tmp_path / "data", download=False) == base
    assert (base / "SST-2" / "dev.tsv").is_file()
    # An interrupted extraction (files there, completion marker missing) is redone.
    (base / "SST-2" / "train.tsv").write_text("half-written")
    next(base.glob(".extracted-*")).unlink()
    ensure_corpus(ok, tmp_path / "data", download=False)
    assert (base / "SST-2" / "train.tsv").read_text().startswith("sentence\tlabel")
    (base / "SST-2" / "dev.tsv").unlink()  # a deleted file comes back from the archive
    ensure_corpus(ok, tmp_path / "data", download=False)
    assert (base / "SST-2" / "dev.tsv").is_file()
    # The real spec's published checksum does not match this home-made archive.
    (base / "SST-2" / "dev.tsv").unlink()
    with pytest.raises(DataError, match="expected d67e16fb"):
        ensure_corpus(real, tmp_path / "data", download=False)
