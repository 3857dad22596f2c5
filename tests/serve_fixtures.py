"""Real, tiny run directories of every model family and a live uvicorn server, for the serving tests.

Used by tests/test_serve.py and tests/test_playground.py (``from serve_fixtures import ...``). Each family is
trained through its public training API for a few steps on a slice of the shared data; the run directories are
built once per pytest session (under the session's base temp dir) and shared by both test files.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from pathlib import Path

import pytest

#: run-directory base name (= served model name) per family
NAMES = {"classifier": "sst-tiny", "lm": "shakespeare-lstm", "gpt": "shakespeare-gpt", "translator": "fra-tiny",
         "vectors": "shakespeare-w2v", "glove": "shakespeare-glove", "seqgan": "captions-seqgan"}

TINY_TRAIN = ["train.max_steps=3", "train.epochs=1", "train.progress=false", "train.tensorboard=false",
              "train.log_every=100", "train.eval_every=0", "train.device=cpu", "train.warmup_steps=0",
              "train.num_threads=1"]


def _quiet(*_args, **_kwargs) -> None:
    pass


def build_classifier(shared_data: Path, out: Path) -> Path:
    from lmlab.recipes.classify import ClassifyRecipe

    data = out.parent / "sst2-slice.tsv"
    with gzip.open(shared_data / "sst2" / "train.tsv.gz", "rt", encoding="utf-8") as src:
        data.write_text("".join(line for _, line in zip(range(601), src, strict=False)), encoding="utf-8")
    recipe = ClassifyRecipe.from_preset(
        "bilstm", [*TINY_TRAIN, "model.embed_dim=16", "model.hidden_dim=16", "model.bag_dim=8",
                   "model.bigram_buckets=4096", "data.val_split=0.1", "data.min_freq=1", "train.batch_size=32"],
        data=str(data), log=_quiet)
    recipe.train(out)
    return out




def _builders() -> dict:
    return {"classifier": build_classifier, "lm": build_lm, "gpt": build_gpt, "translator": build_translator,
            "vectors": build_vectors, "glove": build_glove, "seqgan": build_seqgan}


def build_runs(shared_data: Path, root: Path) -> dict[str, Path]:
    """Build (or reuse, within one session) a run directory for every family; returns family -> path."""
    runs = {}
    for family, build in _builders().items():
        out = root / family / NAMES[family]
        done = root / family / ".built"
        if not done.is_file():  # not built yet in this session
            out.parent.mkdir(parents=True, exist_ok=True)
            build(shared_data, out)
            done.touch()
        runs[family] = out
    return runs


@pytest.fixture(scope="session")
def serve_runs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """family -> a real trained run directory (tiny), shared by every serving test of the session."""
    return build_runs(shared_data, tmp_path_factory.getbasetemp() / "serve-runs")


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, app) -> None:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def build_lm(shared_data: Path, out: Path) -> Path:
    from lmlab.config import TrainConfig
    from lmlab.data.lm import LMDataConfig
    from lmlab.models.rnn_lm import RNNLMConfig
    from lmlab.recipes.lm import LMRecipe, LMRunConfig

    data = out.parent / "shakespeare-slice.txt"
    with gzip.open(shared_data / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8") as src:
        data.write_text(src.read(40_000), encoding="utf-8")
    run = LMRunConfig(
        model=RNNLMConfig(cell="lstm", embed_dim=16, hidden_dim=32, num_layers=1),
        data=LMDataConfig(tokenizer="char", bptt=32, val_fraction=0.05),
        train=TrainConfig(max_steps=3, lr=3e-3, batch_size=16, progress=False, tensorboard=False, device="cpu",
                          log_every=100, num_threads=1),
    )
    LMRecipe(run, data=data, log=_quiet).train(out)
    return out


def build_translator(shared_data: Path, out: Path) -> Path:
    from lmlab.data.parallel import load_pairs
    from lmlab.recipes.seq2seq import Seq2SeqRecipe

    data = out.parent / "eng-fra-slice.tsv"
    with gzip.open(shared_data / "eng-fra" / "fra.txt.gz", "rt", encoding="utf-8") as src:
        rows = [line for _, line in zip(range(3000), src, strict=False)]
    data.write_text("".join("\t".join(r.rstrip("\n").split("\t")[:2]) + "\n" for r in rows[::3]), encoding="utf-8")
    pairs = load_pairs(data)
    run = Seq2SeqRecipe.resolve("tour-small", [*TINY_TRAIN, "model.embed_dim=16", "model.hidden_dim=16",
                                               "train.batch_size=32"])
    Seq2SeqRecipe(run, src=pairs[:-40], val_src=pairs[-40:], log=_quiet).train(out)
    return out


def build_vectors(shared_data: Path, out: Path) -> Path:
    from lmlab.models.word2vec import Word2Vec, Word2VecConfig
    from lmlab.recipes.embed import fit_corpus, save_vectors

    corpus = out.parent / "shakespeare.txt"
    with gzip.open(shared_data / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8") as src:
        corpus.write_text(src.read(400_000), encoding="utf-8")
    w2v = Word2Vec(Word2VecConfig(embed_dim=16, epochs=1, min_count=3, threads=1, compute_loss=False))
    fit_corpus(w2v, str(corpus), log=_quiet)
    save_vectors(w2v, out)
    return out


def build_gpt(shared_data: Path, out: Path) -> Path:
    from lmlab.recipes.gpt import GPTRecipe

    data = out.parent / "shakespeare-slice.txt"
    with gzip.open(shared_data / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8") as src:
        data.write_text(src.read(40_000), encoding="utf-8")
    recipe = GPTRecipe.from_preset(
        "char", [*TINY_TRAIN, "model.block_size=64", "model.embed_dim=32", "model.num_layers=1", "model.num_heads=2",
                 "train.batch_size=8", "train.save_every=0"],
        data=str(data), log=_quiet)
    recipe.train(out)
    return out


def build_seqgan(shared_data: Path, out: Path) -> Path:
    from lmlab.recipes.gan import GANRecipe

    data = out.parent / "multi30k-captions.txt"
    with gzip.open(shared_data / "multi30k" / "tok" / "train.lc.norm.tok.en.gz", "rt", encoding="utf-8") as src:
        data.write_text("".join(line for _, line in zip(range(600), src, strict=False)), encoding="utf-8")
    recipe = GANRecipe.from_preset(
        "seqgan-multi30k",
        ["model.embed_dim=8", "model.hidden_dim=8", "model.max_len=12", "model.d_embed_dim=8",
         "model.d_filter_sizes=[2,3]", "model.d_num_filters=[4,4]", "gan.pretrain_epochs=1", "gan.d_pretrain_steps=1",
         "gan.adversarial_rounds=1", "gan.d_steps_per_round=1", "gan.rollout_num=1", "gan.eval_every_epochs=0",
         "gan.eval_every_rounds=0", "data.test_path=", "train.batch_size=64", "train.progress=false",
         "train.num_threads=1", "train.device=cpu"],
        source="data", data=str(data), log=_quiet)
    recipe.train(out)
    return out


def build_glove(shared_data: Path, out: Path) -> Path:
    from lmlab.models.glove import GloVe, GloVeConfig
    from lmlab.recipes.embed import fit_corpus, save_vectors

    corpus = out.parent / "shakespeare.txt"
    with gzip.open(shared_data / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8") as src:
        corpus.write_text(src.read(400_000), encoding="utf-8")
    glove = GloVe(GloVeConfig(embed_dim=16, epochs=2, min_count=3, threads=1, memory_mb=64))
    fit_corpus(glove, str(corpus), workdir=out.parent / "glove-work", log=_quiet)
    save_vectors(glove, out)
    return out
