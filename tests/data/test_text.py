"""Tokenizer, vocabulary, corpus readers on files in their real formats, and load_text_data."""

from __future__ import annotations

import hashlib
import json
import random
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.config import RunConfig
from ablate.data import DataBundle, load_data
from ablate.data.glove import PAD_TOKEN, UNK_TOKEN
from ablate.data.text import (
    CORPORA,
    SPLIT_SEED,
    CorpusSpec,
    RawText,
    RemoteFile,
    Vocabulary,
    build_vocab,
    ensure_corpus,
    load_text_data,
    read_ag_news,
    read_dbpedia,
    read_imdb,
    read_local,
    read_sst2,
    read_trec,
    read_yelp_polarity,
    split_holdout,
    tokenize,
    tokenize_batch,
)
from ablate.exceptions import ConfigError, DataError

# -- tokenizer -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("Don't stop!", ["do", "n't", "stop", "!"]),
        ("It's Mary's; they're here, we've gone", ["it", "'s", "mary", "'s", ";", "they", "'re",
                                                   "here", ",", "we", "'ve", "gone"]),
        ("I can't, won't, I'll, I'd, I'm", ["i", "ca", "n't", ",", "wo", "n't", ",", "i", "'ll",
                                              ",", "i", "'d", ",", "i", "'m"]),
        ("The U.S. economy, e.g. in 2004...", ["the", "u.s.", "economy", ",", "e.g.", "in",
                                               "2004", "..."]),
        ("Mr. Smith paid $1,000.50 (3.5%) at 10:30", ["mr.", "smith", "paid", "$", "1,000.50",
                                                      "(", "3.5", "%", ")", "at", "10:30"]),
        ("A well-known state-of-the-art -- idea", ["a", "well-known", "state-of-the-art", "--",
                                                   "idea"]),
        ("``Quoted,'' she said \u201cdouble\u201d \u2019tis O\u2019Neill\u2019s",
         ['"', "quoted", ",", '"', "she", "said", '"', "double", '"', "'", "tis", "o'neill",
          "'s"]),
        ("The students' books. No. 5 is no.", ["the", "students", "'", "books", ".", "no.", "5",
                                               "is", "no", "."]),
        ("does n't ( TREC style ) ?", ["does", "n't", "(", "trec", "style", ")", "?"]),
        ("Café NAÏVE 1990s 2-1", ["café", "naïve", "1990s", "2-1"]),
        ("", []),
        ("   \t\n ", []),
    ],
)
def test_tokenizer_follows_glove_6b_conventions(text, tokens):
    assert tokenize(text) == tokens


def test_tokenize_batch_matches_single_texts_and_cuts_exactly():
    rng = random.Random(0)
    pieces = ["u.s.", "e.g.", "no. 5", "...", "1,000", "well-known", "don't", "it's", "mr.",
              "word", "x" * 30, ",", "a-b-c-d", "ok", "\u201cq\u201d", "\x00"]
    texts = [" ".join(rng.choice(pieces) for _ in range(rng.randint(0, 120))) for _ in range(300)]
    full = [tokenize(t) for t in texts]
    assert tokenize_batch(texts) == full
    for max_tokens in (1, 3, 7, 20):
        # Long texts go through the prefix shortcut: the cut must never change a token.
        assert tokenize_batch(texts, max_tokens) == [f[:max_tokens] for f in full]
    assert tokenize_batch([]) == []


def test_tokenizer_speed_on_100k_sentences():
    rng = np.random.default_rng(0)
    words = np.array(["the", "movie", "wasn't", "great", ",", "but", "it's", "u.s.", "fun", "3.5"])
    texts = [" ".join(words[rng.integers(0, len(words), 20)]) + "." for _ in range(100_000)]
    import time

    start = time.perf_counter()
    docs = tokenize_batch(texts, 64)
    assert len(docs) == 100_000
    assert time.perf_counter() - start < 20  # a few seconds on 2 cores; generous for CI


# -- vocabulary ------------------------------------------------------------------------------


def test_vocabulary_encode_cuts_pads_and_never_leaves_a_row_empty():
    vocab = Vocabulary([PAD_TOKEN, UNK_TOKEN, "a", "b", "c"])
    x = vocab.encode([["a", "b", "c", "a"], ["b"], [], ["zzz", "c"]], max_len=3)
    assert x.dtype == np.int64 and x.shape == (4, 3)
    assert x.tolist() == [[2, 3, 4], [3, 0, 0], [1, 0, 0], [1, 4, 0]]
    assert (x != 0).any(axis=1).all()
    assert vocab.encode([], 5).shape == (0, 5)
    with pytest.raises(ValueError):
        Vocabulary(["a", PAD_TOKEN, UNK_TOKEN])


def test_build_vocab_orders_by_frequency_and_adds_only_pretrained_heldout_words():
    train = [["b", "a", "b"], ["c", "b", "a"], ["rare"]]
    heldout = [["a", "glove1", "glove2", "glove2", "nope"]]
    pretrained = {"a", "b", "c", "glove1", "glove2"}

    def has_vector(tokens):
        return np.array([t in pretrained for t in tokens])

    vocab = build_vocab(train, extra_docs=heldout, has_vector=has_vector)
    assert vocab.tokens == [PAD_TOKEN, UNK_TOKEN, "b", "a", "c", "rare", "glove2", "glove1"]
    assert "nope" not in vocab
    # min_freq drops rare training words without a vector but keeps pretrained ones.
    vocab2 = build_vocab(train + [["glove1"]], has_vector=has_vector, min_freq=2)
    assert vocab2.tokens == [PAD_TOKEN, UNK_TOKEN, "b", "a", "c", "glove1"]
    assert build_vocab(train).tokens == [PAD_TOKEN, UNK_TOKEN, "b", "a", "c", "rare"]


def test_split_holdout_is_stratified_fixed_and_falls_back_when_it_must():
    labels = np.array([0] * 80 + [1] * 20)
    data = RawText([f"t{i}" for i in range(100)], labels)
    kept, held = split_holdout(data, 0.2)
    assert len(held) == 20 and len(kept) == 80
    assert np.bincount(held.labels).tolist() == [16, 4]
    assert set(kept.texts).isdisjoint(held.texts)
    again_kept, again_held = split_holdout(data, 0.2)
    assert again_held.texts == held.texts  # SPLIT_SEED is fixed
    assert split_holdout(data, 0.2, seed=SPLIT_SEED + 1)[1].texts != held.texts
    assert len(split_holdout(data, 0.0)[1]) == 0
    # One example of a class cannot be stratified: a plain random split instead.
    odd = RawText(["a", "b", "c", "d", "e"], np.array([0, 0, 0, 0, 1]))
    assert len(split_holdout(odd, 0.4)[1]) == 2


# -- corpus readers on files written in each corpus's real format -----------------------------


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


# -- local csv / tsv / jsonl -------------------------------------------------------------------


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


# -- fetching ----------------------------------------------------------------------------------


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
    root = ensure_corpus(spec, data_dir, download=True, progress=False)
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
        ensure_corpus(bad, tmp_path / "other", download=True, progress=False)
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


# -- the bundle --------------------------------------------------------------------------------


def _write_ag_news(root: Path, n: int = 60) -> None:
    root.mkdir(parents=True, exist_ok=True)
    topics = ["war peace talks", "football goal match", "stock market profit", "chip software"]
    rows = []
    for i in range(n):
        c = i % 4
        rows.append(f'"{c + 1}","Title {i}","zzqxunknownword{i % 3} news about {topics[c]} '
                    f'number {i}, don\'t miss it."')
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    (root / "test.csv").write_text("\n".join(rows[:12]).replace("news", "overlook") + "\n")


def test_load_text_data_builds_the_bundle(tmp_path):
    _write_ag_news(tmp_path / "ag_news")
    cfg = RunConfig(dataset="ag_news", data_dir=str(tmp_path), max_len=12, val_fraction=0.25,
                    quiet=True)
    bundle = load_data(cfg)
    assert isinstance(bundle, DataBundle) and bundle.task == "text"
    assert bundle.num_classes == 4 and bundle.class_names[3] == "Sci/Tech"
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (45, 15, 12)
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.dtype == torch.int64 and split.x.shape[1] == 12
        assert split.y.dtype == torch.int64
        assert bool((split.x != 0).any(dim=1).all())
        assert int(split.x.max()) < len(bundle.vocab)
    # Validation is stratified: 15 of 60 with 4 balanced classes.
    assert sorted(torch.bincount(bundle.val.y).tolist()) == [3, 4, 4, 4]
    assert bundle.vocab[:2] == [PAD_TOKEN, UNK_TOKEN] and bundle.pad_index == 0
    emb = bundle.embedding_matrix
    assert emb.shape == (len(bundle.vocab), 50) and emb.dtype == torch.float32
    assert torch.count_nonzero(emb[0]) == 0
    # Training-only unknown words are in the vocabulary (random rows); a test-only word
    # with a GloVe vector joined too, and the encoding uses it.
    assert "zzqxunknownword1" in bundle.vocab and "overlook" in bundle.vocab
    assert bundle.info["vocab_random"] == 3
    assert bundle.info["vocab_size"] == len(bundle.vocab) == emb.shape[0]
    assert bundle.info["test_size"] == 12 and bundle.info["embedding_dim"] == 50
    overlook = bundle.vocab.index("overlook")
    assert bool((bundle.test.x == overlook).any())
    decoded = [bundle.vocab[i] for i in bundle.train.x[0].tolist() if i != 0]
    assert decoded[0] == "title" and decoded[2].startswith("zzqx")
    assert decoded[3:5] == ["news", "about"]
    assert len(decoded) == 12  # cut at max_len

    # Same split and ids with another seed; only the random rows of unknown words change.
    other = load_text_data(cfg.replace(seed=7))
    assert torch.equal(other.val.x, bundle.val.x) and other.vocab == bundle.vocab
    unknown = bundle.vocab.index("zzqxunknownword1")
    assert not torch.allclose(other.embedding_matrix[unknown], emb[unknown])
    known = bundle.vocab.index("football")
    assert torch.equal(other.embedding_matrix[known], emb[known])


def test_load_text_data_single_local_file_gets_test_and_val_held_out(tmp_path):
    path = tmp_path / "all.jsonl"
    labels = ["spam", "ham"]
    with path.open("w") as f:
        for i in range(50):
            f.write(json.dumps({"body": f"message {i} buy now" if i % 2 else f"hi {i}",
                                "kind": labels[i % 2]}) + "\n")
    cfg = RunConfig(dataset=f"jsonl:{path}", text_col="body", label_col="kind", max_len=4,
                    test_fraction=0.2, val_fraction=0.1, quiet=True)
    bundle = load_text_data(cfg)
    assert bundle.class_names == ["ham", "spam"]
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (36, 4, 10)
    assert bundle.train.x.shape == (36, 4)
    assert bundle.info["source"] == f"jsonl:{path}" and bundle.info["split_seed"] == SPLIT_SEED
    with pytest.raises(ConfigError, match="test_fraction"):
        load_text_data(cfg.replace(test_fraction=0.0))
    with pytest.raises(ConfigError, match="max_len"):
        load_text_data(cfg.replace(max_len=0))
