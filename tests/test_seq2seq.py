"""Sequence to sequence: data, attention masking, decoding, training, run directories, CLI and bad input."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmlab.cli import main
from lmlab.config import list_presets
from lmlab.data.parallel import (
    ParallelDataConfig,
    ParallelDataset,
    TruncationWarning,
    build_codecs,
    collate_pairs,
    detokenize,
    load_pairs,
    read_aligned,
)
from lmlab.errors import ConfigError, DataError
from lmlab.metrics import corpus_bleu, corpus_chrf
from lmlab.models.seq2seq import Seq2Seq, Seq2SeqConfig
from lmlab.pipelines.translate import Translator
from lmlab.recipes.seq2seq import Seq2SeqRecipe, Seq2SeqRunConfig

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "src" / "lmlab" / "assets" / "eng-fra-short.tsv.gz"

ATTENTIONS = [
    {"attention": "bahdanau"},
    {"attention": "dot", "cell": "lstm", "num_layers": 2},
    {"attention": "general", "input_feeding": False, "tie_embeddings": False},
    {"arch": "transformer", "num_layers": 2, "num_heads": 2},
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and OpenMP threads spin badly on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tatoeba_pairs() -> list[tuple[str, str]]:
    """A few hundred real English-French pairs (bundled Tatoeba subset), one pair per English sentence."""
    seen, out = set(), []
    for src, tgt in load_pairs(ASSET)[2000:]:
        if src not in seen:
            seen.add(src)
            out.append((src, tgt))
        if len(out) == 300:
            break
    return out


@pytest.fixture(scope="module")
def codecs(tatoeba_pairs):
    return build_codecs(tatoeba_pairs, ParallelDataConfig(lowercase=True))


def tiny_model(codecs, seed: int = 0, **kw) -> Seq2Seq:
    torch.manual_seed(seed)
    src, tgt = codecs
    cfg = dict(embed_dim=32, hidden_dim=64, dropout=0.0, label_smoothing=0.0)
    cfg.update(kw)
    return Seq2Seq(Seq2SeqConfig(src_vocab_size=src.vocab_size, tgt_vocab_size=tgt.vocab_size, **cfg)).eval()


def batch_of(codecs, pairs):
    src, tgt = codecs
    return collate_pairs([(src.encode(s), tgt.encode(t)) for s, t in pairs])


# ------------------------------------------------------------------------------------------- attention


@pytest.mark.parametrize("kw", ATTENTIONS, ids=lambda kw: kw.get("arch") or kw["attention"])
def test_attention_is_a_distribution_over_real_source_positions(codecs, tatoeba_pairs, kw):
    model = tiny_model(codecs, **kw)
    pairs = [tatoeba_pairs[0], ("I am a student who is very tired today .", tatoeba_pairs[1][1])]
    batch = batch_of(codecs, pairs)
    weights = model.attention_weights(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, S)
    assert weights.shape == (2, batch.tgt_in.shape[1], batch.src.shape[1])
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]))
    assert (weights >= 0).all()
    short = int(batch.src_lengths[0])
    assert short < batch.src.shape[1]
    assert weights[0, :, short:].abs().max().item() == 0.0  # padded positions get exactly zero weight
    assert weights[0, :, :short].min().item() > 0.0


@pytest.mark.parametrize("kw", ATTENTIONS, ids=lambda kw: kw.get("arch") or kw["attention"])
def test_masking_makes_outputs_independent_of_padding(codecs, tatoeba_pairs, kw):
    model = tiny_model(codecs, **kw)
    alone = batch_of(codecs, [tatoeba_pairs[3]])
    padded = batch_of(codecs, [tatoeba_pairs[3], ("You are a very , very , very good teacher indeed .", "Vous êtes un très bon professeur .")])
    assert padded.src.shape[1] > alone.src.shape[1]
    with torch.no_grad():
        a = model(alone)[0]
        b = model(padded)[0, : alone.tgt_in.shape[1]]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kw", ATTENTIONS, ids=lambda kw: kw.get("arch") or kw["attention"])
def test_step_by_step_decoding_equals_the_teacher_forced_forward(codecs, tatoeba_pairs, kw):
    # the decoding hooks (init_state / step) give, position by position, the logits of one full forward pass
    model = tiny_model(codecs, **kw)
    batch = batch_of(codecs, tatoeba_pairs[:3])
    with torch.no_grad():
        full = model(batch)  # (B, T, V)
        state = model.init_state(batch.src, batch.src_lengths)
        for t in range(batch.tgt_in.shape[1]):
            logits, state = model.step(batch.tgt_in[:, : t + 1], state)
            torch.testing.assert_close(logits, full[:, t], rtol=1e-4, atol=1e-5)


def test_tied_embeddings_share_one_matrix(codecs):
    model = tiny_model(codecs, tie_embeddings=True)
    assert model.net.out.weight is model.net.tgt_embed.weight
    assert tiny_model(codecs, tie_embeddings=False).net.out.weight is not tiny_model(codecs).net.tgt_embed.weight


def test_label_smoothed_loss_by_hand(codecs, tatoeba_pairs):
    model = tiny_model(codecs, label_smoothing=0.1).train()
    batch = batch_of(codecs, tatoeba_pairs[:4])
    torch.manual_seed(1)
    out = model.loss(batch)
    logits = model(batch).reshape(-1, codecs[1].vocab_size)
    gold = batch.tgt_out.reshape(-1)
    keep = gold != 0
    logp = torch.log_softmax(logits[keep], -1)
    eps, V = 0.1, logits.shape[-1]
    expected = -((1 - eps) * logp.gather(1, gold[keep].unsqueeze(1)).squeeze(1) + eps / V * logp.sum(-1)).mean()
    torch.testing.assert_close(out["loss"], expected)
    assert out["num_tokens"] == int(keep.sum())


def test_teacher_forcing_below_one_trains(codecs, tatoeba_pairs):
    model = tiny_model(codecs, teacher_forcing=0.5).train()
    out = model.loss(batch_of(codecs, tatoeba_pairs[:8]))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert all(p.grad is not None for p in model.net.encoder.parameters())


# -------------------------------------------------------------------------------------------- decoding


def _overfit(codecs, pairs, steps: int, **kw) -> Seq2Seq:
    model = tiny_model(codecs, **kw).train()
    batch = batch_of(codecs, pairs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.02:
            break
    return model.eval()


def _translator(model, codecs) -> Translator:
    return Translator(model, codecs[0], codecs[1], Seq2SeqRunConfig(data=ParallelDataConfig(lowercase=True), model=model.config))


@pytest.mark.parametrize("arch", ["rnn", "transformer"])
def test_overfit_a_small_batch_to_exact_reproduction(codecs, tatoeba_pairs, arch):
    pairs = tatoeba_pairs[10:22]
    kw = {"arch": arch, "num_heads": 2, "num_layers": 2} if arch == "transformer" else {}
    model = _overfit(codecs, pairs, 250, **kw)
    pipe = _translator(model, codecs)
    got = [r["translation"] for r in pipe.translate([s for s, _ in pairs], beam_size=3)]
    want = [codecs[1].decode(codecs[1].encode(t)) for _, t in pairs]
    assert got == want


@pytest.fixture(scope="module")
def half_trained(codecs, tatoeba_pairs):
    """A model trained a little: outputs that are neither random nor memorised, so beams disagree."""
    return _translator(_overfit(codecs, tatoeba_pairs[:48], 40), codecs)


def test_beam_size_one_equals_greedy(half_trained, codecs, tatoeba_pairs):
    sources = [codecs[0].encode(s) for s, _ in tatoeba_pairs[40:60]]
    greedy = half_trained.decode_ids(sources, greedy=True, max_len=20)
    beam = half_trained.decode_ids(sources, beam_size=1, length_penalty=0.0, max_len=20)
    assert [g[0][0] for g in greedy] == [b[0][0] for b in beam]
    for (_, g_score), (_, b_score) in zip((g[0] for g in greedy), (b[0] for b in beam), strict=True):
        assert g_score == pytest.approx(b_score, abs=1e-4)  # both are log P(y <eos> | x)


def test_n_best_lists_are_sorted_by_score(half_trained, tatoeba_pairs):
    results = half_trained.translate([s for s, _ in tatoeba_pairs[60:70]], beam_size=5, n_best=5)
    distinct_lists = 0
    for r in results:
        scores = [h["score"] for h in r["n_best"]]
        assert len(scores) == 5
        assert scores == sorted(scores, reverse=True)
        assert r["translation"] == r["n_best"][0]["translation"] and r["score"] == scores[0]
        distinct_lists += len({h["translation"] for h in r["n_best"]}) > 1
    assert distinct_lists > 0


def test_beam_size_below_one_is_refused(half_trained):
    with pytest.raises(ConfigError, match="beam size"):
        half_trained.translate(["I am cold ."], beam_size=0)
    with pytest.raises(ConfigError, match="n-best"):
        half_trained.translate(["I am cold ."], beam_size=2, n_best=3)


def test_long_sentence_truncates_with_warning_or_errors(half_trained):
    long = " ".join(["very"] * 150) + " tired ."
    with pytest.warns(TruncationWarning, match="only the first 100"):
        (out,) = half_trained.translate([long], beam_size=1, max_len=5)
    assert isinstance(out["translation"], str)
    with pytest.raises(DataError, match="more than the model's maximum"):
        half_trained.translate([long], on_long="error")


# --------------------------------------------------------------------------------------------- metrics


def test_bleu_of_a_perfect_hypothesis_is_100():
    refs = ["Two young men are playing football.", "A woman in a red dress sings."]
    assert corpus_bleu(refs, refs)["score"] == pytest.approx(100.0)
    assert corpus_chrf(refs, refs)["score"] == pytest.approx(100.0)
    bleu = corpus_bleu(["two young men are playing football ."], refs[:1], lowercase=True)
    assert bleu["score"] == pytest.approx(100.0) and "case:lc" in bleu["signature"]
    assert 0 < corpus_bleu(["Two men are playing football."], refs[:1])["score"] < 100
    with pytest.raises(DataError, match="line-aligned"):
        corpus_bleu(refs, refs[:1])


def test_detokenize():
    assert detokenize(["a", "man", "in", "a", "t", "-", "shirt", "(", "blue", ")", "."]) == "a man in a t-shirt (blue)."
    assert detokenize(["c", "'", "est", "l", "'", "homme", "!"]) == "c'est l'homme!"


# ------------------------------------------------------------------------------------------------ data


def test_read_formats(tmp_path, shared_data):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272\n\nHi.\tSalut !\n", encoding="utf-8")
    assert load_pairs(tsv) == [("Go.", "Va !"), ("Hi.", "Salut !")]
    assert load_pairs(tsv, reverse=True) == [("Va !", "Go."), ("Salut !", "Hi.")]
    jl = tmp_path / "pairs.jsonl"
    jl.write_text('{"question": "Who?", "answer": "Me."}\n{"question": "Why?", "answer": "Because."}\n')
    assert load_pairs(jl) == [("Who?", "Me."), ("Why?", "Because.")]
    m30k = shared_data / "multi30k" / "raw"
    pairs = read_aligned(m30k / "val.de.gz", m30k / "val.en.gz")
    assert len(pairs) == 1014 and pairs[0][1].startswith("A group of men")


def test_length_filter_and_buckets(codecs, tatoeba_pairs):
    from lmlab.data.parallel import make_loader

    ds = ParallelDataset.encode(tatoeba_pairs, *codecs, max_src_len=5, max_tgt_len=8)
    assert ds.dropped > 0 and len(ds) + ds.dropped == len(tatoeba_pairs)
    assert all(len(s) <= 5 and len(t) <= 8 for s, t in ds.items)
    batches = list(make_loader(ds, batch_size=16))
    assert sum(len(b) for b in batches) == len(ds)
    padding = sum(int((b.src == 0).sum()) for b in batches)
    assert padding < 0.2 * sum(int(b.src.numel()) for b in batches)  # bucketing keeps padding low


def test_misaligned_files_name_both_counts_and_the_odd_line(tmp_path):
    src, tgt = tmp_path / "a.de", tmp_path / "a.en"
    src.write_text("eins\nzwei\ndrei\nvier\n")
    tgt.write_text("one\n\nthree\n")
    with pytest.raises(DataError) as err:
        read_aligned(src, tgt)
    msg = str(err.value)
    assert "has 4 lines" in msg and "has 3" in msg and f"{tgt}:2" in msg


def test_empty_line_on_one_side(tmp_path):
    src, tgt = tmp_path / "a.de", tmp_path / "a.en"
    src.write_text("eins\n\ndrei\n")
    tgt.write_text("one\ntwo\nthree\n")
    with pytest.raises(DataError, match=rf"{src}:2: empty line"):
        read_aligned(src, tgt)
    assert read_aligned(src, tgt, on_empty="skip") == [("eins", "one"), ("drei", "three")]


def test_tsv_row_without_tab_names_file_and_line(tmp_path):
    tsv = tmp_path / "fra.txt"
    tsv.write_text("Go.\tVa !\nRun! Cours !\n")
    with pytest.raises(DataError, match=rf"{tsv}:2: no tab"):
        load_pairs(tsv)


# ------------------------------------------------------------------------------------- runs and the CLI


def test_every_preset_loads_and_builds(codecs):
    names = list_presets("seq2seq")
    assert {"gru-bahdanau", "lstm-luong", "transformer", "tour-small"} <= set(names)
    for name in names:
        run = Seq2SeqRecipe.resolve(name)
        text = (REPO / "src" / "lmlab" / "configs" / "seq2seq" / f"{name}.yaml").read_text()
        assert text.startswith("# lmlab seq2seq train")
        run.model.src_vocab_size, run.model.tgt_vocab_size = 100, 100
        model = Seq2Seq(run.model)
        assert model.num_parameters() > 0


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tatoeba_pairs):
    """A tiny model trained by the real training path; returns (run_dir, in-memory model, codecs)."""
    from lmlab.callbacks import Callback

    class Keep(Callback):
        def on_fit_end(self, trainer):
            self.model = trainer.model

    keep = Keep()
    run = Seq2SeqRecipe.resolve(
        "tour-small",
        ["model.embed_dim=32", "model.hidden_dim=64", "epochs=2", "train.batch_size=32", "progress=false", "log_every=5"],
    )
    out = tmp_path_factory.mktemp("s2s") / "run"
    Seq2SeqRecipe(run, src=tatoeba_pairs, log=lambda s: None).train(out, callbacks=[keep])
    return out, keep.model


def test_save_load_gives_identical_translations(trained_run, tatoeba_pairs, tmp_path):
    run_dir, model = trained_run
    loaded = Translator.from_run_dir(run_dir)
    in_memory = Translator(model, loaded.src_codec, loaded.tgt_codec, loaded.run)
    sources = [s for s, _ in tatoeba_pairs[:20]]
    expected = in_memory.translate(sources, beam_size=3, n_best=2)
    assert loaded.translate(sources, beam_size=3, n_best=2) == expected
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    import lmlab

    again = lmlab.load(copy)
    assert again.translate(sources, beam_size=3, n_best=2) == expected
    info = again.info()
    assert info["model_type"] == "seq2seq" and info["num_parameters"] == model.num_parameters()
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses[-1] < losses[0]


def test_cli_translate_eval_attention(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    assert main(["translate", str(run_dir), "I am a student .", "--n-best", "2", "--beam", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("1\t")
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("I am cold .\nShe is tall .\n")
    ref.write_text("J'ai froid.\nElle est grande.\n")
    assert main(["seq2seq", "eval", str(run_dir), "--src", str(src), "--ref", str(ref), "--beam", "2"]) == 0
    out = capsys.readouterr().out
    assert "BLEU" in out and "nrefs:1|case:mixed|eff:no|tok:13a" in out and "chrF" in out
    png = tmp_path / "a.png"
    assert main(["seq2seq", "attention", str(run_dir), "I am a student .", "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_input_exits_2(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("I am cold .\nShe is tall .\n")
    ref.write_text("J'ai froid.\n")
    assert main(["seq2seq", "eval", str(run_dir), "--src", str(src), "--ref", str(ref)]) == 2
    assert "has 2 lines but the reference file" in capsys.readouterr().err
    assert main(["translate", str(run_dir), "I am cold .", "--beam", "0"]) == 2
    assert "beam size must be an integer >= 1" in capsys.readouterr().err
    assert main(["translate", str(run_dir), " ".join(["very"] * 20), "--on-long", "error"]) == 2
    assert "more than the model's maximum 12" in capsys.readouterr().err
    assert main(["translate", str(run_dir), " ".join(["very"] * 20)]) == 0
    assert "warning: " in capsys.readouterr().err
    bad = tmp_path / "bad.tsv.gz"
    bad.write_bytes(gzip.compress(b"Go.\tVa !\nno tab here\n"))
    assert main(["seq2seq", "train", "--src", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert f"{bad}:2: no tab" in capsys.readouterr().err


def test_recipe_evaluate_and_the_old_import_path(trained_run, tatoeba_pairs, tmp_path):
    run_dir, _ = trained_run
    pairs = tatoeba_pairs[:6]
    report = Seq2SeqRecipe.evaluate(run_dir, pairs, beam_size=2)
    assert report["n"] == 6 and len(report["hypotheses"]) == 6 and 0 <= report["bleu"] <= 100
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    ref.write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    from_files = Seq2SeqRecipe.evaluate(run_dir, src, ref, beam_size=2, limit=4)
    assert from_files["hypotheses"] == report["hypotheses"][:4]
    from lmlab.translation import Translator as Old  # documented in docs/api.md before the recipe contract

    assert Old is Translator and isinstance(Translator.from_run_dir(run_dir), Translator)


def test_val_size_holds_out_the_same_pairs_as_before(tatoeba_pairs):
    import random

    from lmlab.recipes.seq2seq import hold_out

    for n, seed in [(1, 0), (37, 0), (100, 3), (299, 7)]:
        order = list(range(len(tatoeba_pairs)))  # what `seq2seq train --val-size` did before the recipe
        random.Random(seed).shuffle(order)
        held = set(order[:n])
        want_val = [p for i, p in enumerate(tatoeba_pairs) if i in held]
        want_train = [p for i, p in enumerate(tatoeba_pairs) if i not in held]
        assert hold_out(tatoeba_pairs, n, seed) == (want_train, want_val)
    with pytest.raises(ConfigError, match="--val-size must be between 1 and 299"):
        hold_out(tatoeba_pairs, 300, 0)


def test_layering_data_never_imports_models():
    """data/parallel.py reads and batches without the model; models/seq2seq.py imports torch, errors and models."""
    import ast

    def imports(path: Path) -> set[str]:
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
        return found

    src = REPO / "src" / "lmlab"
    assert not {m for m in imports(src / "data" / "parallel.py") if m.startswith("lmlab.models")}
    lmlab_imports = {m for m in imports(src / "models" / "seq2seq.py") if m.startswith("lmlab")}
    assert all(m == "lmlab.errors" or m.startswith("lmlab.models.") for m in lmlab_imports), lmlab_imports
    from lmlab.data import parallel
    from lmlab.models import seq2seq

    # the codec's special ids are the ones the model pads, starts and stops with
    assert (parallel.PAD_ID, parallel.UNK_ID, parallel.BOS_ID, parallel.EOS_ID) == (
        seq2seq.PAD_ID, seq2seq.UNK_ID, seq2seq.BOS_ID, seq2seq.EOS_ID)


def test_overwrite_with_missing_data_keeps_the_old_run(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    before = {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()}
    missing = tmp_path / "no-such-file.tsv"
    assert main(["seq2seq", "train", "--src", str(missing), "--out", str(old), "--overwrite"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()} == before


def test_greedy_scores_match_log_probabilities(half_trained, codecs, tatoeba_pairs):
    (src,) = [codecs[0].encode(tatoeba_pairs[41][0])]
    ((ids, score),) = half_trained.decode_ids([src], greedy=True, max_len=30)[0]
    batch = collate_pairs([(src, ids)])
    with torch.no_grad():
        logp = F.log_softmax(half_trained.model(batch), -1)
    manual = logp.gather(-1, batch.tgt_out.unsqueeze(-1)).sum().item()
    assert score == pytest.approx(manual, abs=1e-4)


def test_sinusoidal_positions_by_hand():
    import math

    from lmlab.models.seq2seq import sinusoidal_positions

    pe = sinusoidal_positions(50, 8)
    pos, i = 7, 3  # dimensions 2i and 2i + 1
    angle = pos / 10000 ** (2 * i / 8)
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_tour_stop_runs_scaled_down(tmp_path):
    from lmlab.tour import run_tour

    out = run_tour(tmp_path, only=["seq2seq"], scale=0.05, log=lambda s: None)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Translation with attention" in report and "I am a student." in report
    assert (out / "seq2seq" / "attention-i-am-a-student.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------------- exact resume (issue 21)


def _train_cmd(data: Path, out: Path, resume: bool = False) -> list[str]:
    """A tiny GRU run: dropout and teacher forcing 0.5 draw from the torch and Python RNGs; 90 steps cross three
    epoch boundaries (a new shuffle each); validation at each epoch end tracks the best weights."""
    return [
        "seq2seq", "train", "--src", str(data), "--val-size", "50", "--preset", "tour-small", "--out", str(out),
        *(["--resume"] if resume else []),
        "model.embed_dim=16", "model.hidden_dim=16", "model.teacher_forcing=0.5", "train.batch_size=16",
        "train.max_steps=90", "train.save_every=5", "train.log_every=5", "train.seed=3",
        "train.num_threads=1", "train.device=cpu", "train.progress=false", "train.tensorboard=false",
    ]  # fmt: skip


def _checkpoint_step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "checkpoints" / "last.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


@pytest.mark.slow
def test_sigkill_three_times_and_resume_ends_bit_identical(tmp_path, shared_data):
    import os
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    from lmlab.callbacks import find_last_checkpoint

    data = tmp_path / "eng-fra-slice.tsv"
    with gzip.open(shared_data / "eng-fra" / "fra.txt.gz", "rt", encoding="utf-8") as f:
        rows = [line.split("\t")[:2] for _, line in zip(range(3000), f, strict=False)]
    data.write_text("".join(f"{s}\t{t.strip()}\n" for s, t in rows[::6]), encoding="utf-8")  # 500 pairs
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    killed = tmp_path / "killed"
    resume = False
    for at_least in (15, 40, 65):
        log = (tmp_path / f"stderr-{at_least}.txt").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "lmlab", *_train_cmd(data, killed, resume)], env=env,
                                stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 120
        while _checkpoint_step(killed) < at_least and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.kill()  # SIGKILL: no handler runs
        proc.wait()
        log.close()
        assert _checkpoint_step(killed) >= at_least, (tmp_path / f"stderr-{at_least}.txt").read_text()
        assert _checkpoint_step(killed) < 90, "the run finished before it was killed; it should be longer"
        resume = True
    assert main(_train_cmd(data, killed, resume=True)) == 0
    straight = tmp_path / "straight"
    assert main(_train_cmd(data, straight)) == 0

    for name in ("model.safetensors", "checkpoints/last"):
        a_dir, b_dir = (killed / name, straight / name) if "." in name else (
            find_last_checkpoint(killed) / "model.safetensors", find_last_checkpoint(straight) / "model.safetensors")
        a, b = load_file(a_dir), load_file(b_dir)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name}: weights differ after kill + resume"
    records = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    for split in ("train", "val"):
        steps = [r["step"] for r in records if r.get("split") == split]
        assert steps and len(steps) == len(set(steps)), f"{split} steps logged twice: {steps}"
    # every loss the interrupted run logged is the uninterrupted run's at that step
    want = {(r.get("split"), r["step"]): r for line in (straight / "metrics.jsonl").read_text().splitlines()
            for r in [json.loads(line)]}
    for r in records:
        assert r.get("loss") == want[r.get("split"), r["step"]].get("loss")
        assert r.get("val_loss") == want[r.get("split"), r["step"]].get("val_loss")
