"""``--overwrite`` never deletes what a user owns (issue 21, items 1-3 and the start-up kill of item 9).

Every refusal is checked through the real CLI: exit status 2, a one-line message, and every file that was there
before still there byte for byte (the whole tree is hashed before and after). The staged replacement of an old
run (:class:`lmlab.checkpoint.StagedRunDir`) is checked directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from lmlab import checkpoint
from lmlab.checkpoint import REPLACED_SUFFIX, StagedRunDir, check_new_run_dir, replaced_path
from lmlab.cli import main
from lmlab.errors import CheckpointError

TINY = [
    "--preset", "seed-lstm", "model.embed_dim=8", "model.lstm_dims=[4, 4]", "model.dense_dim=4",
    "data.num_words=200", "data.max_len=12", "train.progress=false", "train.tensorboard=false",
    "train.num_threads=1", "train.batch_size=8", "train.max_steps=2",
]


# ------------------------------------------------------------------------------------------------ helpers
def tree(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` (hidden ones included): relative path -> sha256 (or "dir")."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def write_labelled(path: Path, n: int = 24, labels=("pos", "neg")) -> Path:
    words = ["good", "bad", "fine", "awful", "great", "dull", "film", "plot", "actor", "scene"]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            text = " ".join(words[(i * k) % len(words)] for k in range(1, 6))
            fh.write(json.dumps({"text": f"{text} {i}", "label": labels[i % len(labels)]}) + "\n")
    return path


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


def assert_refused(capsys, argv: list[str], root: Path, *needles: str) -> str:
    """``argv`` exits 2 with one line on stderr naming ``needles``, and nothing under ``root`` changed."""
    before = tree(root)
    rc, err = run_cli(capsys, argv)
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert tree(root) == before
    return lines[0]


def user_files(folder: Path) -> None:
    """A folder a user cares about: notes and a thesis in a sub-folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("do not lose me\n", encoding="utf-8")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "thesis.tex").write_bytes(b"\\documentclass{article}\n\xe2\x9c\x93 chapter 1\n")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One tiny trained classifier run (copied by each test that needs an existing run)."""
    root = tmp_path_factory.mktemp("trained")
    data = write_labelled(root / "train.jsonl")
    out = root / "run"
    assert main(["classify", "train", "--data", str(data), "--out", str(out), *TINY]) == 0
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    return out


def copy_run(trained_run: Path, dest: Path) -> Path:
    shutil.copytree(trained_run, dest)
    return dest


# ------------------------------------------------------------------------------- classify: the refusals
def test_overwrite_refuses_the_working_directory(tmp_path, monkeypatch, capsys):
    write_labelled(tmp_path / "rt600.jsonl")
    user_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert_refused(
        capsys, ["classify", "train", "--data", "rt600.jsonl", "--out", ".", "--overwrite", *TINY], tmp_path,
        "working directory", "--out",
    )


def test_overwrite_refuses_a_parent_of_the_data(tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    write_labelled(project / "train.jsonl")
    assert_refused(
        capsys, ["classify", "train", "--data", str(project / "train.jsonl"), "--out", str(project), "--overwrite", *TINY],
        tmp_path, str(project),
    )


def test_overwrite_refuses_a_parent_of_the_data_even_in_a_data_subfolder(tmp_path, capsys):
    # the folder's only entry, data/, has the name of a run's own sub-folder: only the input check can save it
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    data = write_labelled(project / "data" / "train.jsonl")
    assert_refused(
        capsys, ["classify", "train", "--data", str(data), "--out", str(project), "--overwrite", *TINY],
        tmp_path, "holds the input",
    )


def test_overwrite_refuses_a_data_folder_holding_user_files(tmp_path, capsys):
    data = write_labelled(tmp_path / "train.jsonl")
    (tmp_path / "mine" / "data").mkdir(parents=True)
    (tmp_path / "mine" / "data" / "survey.csv").write_text("id,answer\n1,yes\n", encoding="utf-8")
    assert_refused(
        capsys, ["classify", "train", "--data", str(data), "--out", str(tmp_path / "mine"), "--overwrite", *TINY],
        tmp_path, "survey.csv",
    )


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    data = write_labelled(tmp_path / "train.jsonl")
    user_files(tmp_path / "mine")
    msg = assert_refused(
        capsys, ["classify", "train", "--data", str(data), "--out", str(tmp_path / "mine"), "--overwrite", *TINY],
        tmp_path, "notes.txt", "sub/",
    )
    assert "move them away or choose another --out" in msg


def test_overwrite_refuses_a_model_folder_whose_files_have_run_names(tmp_path, capsys):
    # a downloaded Hugging Face model: config.json, model.safetensors, tokenizer.json are a run's names too, but
    # no lmlab run wrote that config.json (no format_version)
    data = write_labelled(tmp_path / "train.jsonl")
    model = tmp_path / "gpt2-download"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}')
    (model / "model.safetensors").write_bytes(b"\x08" + bytes(15))
    (model / "tokenizer.json").write_text('{"version": "1.0"}')
    assert_refused(
        capsys, ["classify", "train", "--data", str(data), "--out", str(model), "--overwrite", *TINY], tmp_path,
        "config.json, which no lmlab run wrote",
    )


def test_without_overwrite_nothing_is_replaced(tmp_path, capsys, trained_run):
    data = write_labelled(tmp_path / "train.jsonl")
    run = copy_run(trained_run, tmp_path / "run")
    assert_refused(
        capsys, ["classify", "train", "--data", str(data), "--out", str(run), *TINY], tmp_path, "--overwrite",
    )


def test_overwrite_with_missing_data_keeps_the_old_run(tmp_path, capsys, trained_run):
    run = copy_run(trained_run, tmp_path / "run")
    assert_refused(
        capsys,
        ["classify", "train", "--data", str(tmp_path / "nope.jsonl"), "--out", str(run), "--overwrite", *TINY],
        tmp_path, "nope.jsonl",
    )
    assert not replaced_path(run).exists()


def test_overwrite_with_broken_data_keeps_the_old_run(tmp_path, capsys, trained_run):
    data = write_labelled(tmp_path / "train.jsonl")
    lines = data.read_text(encoding="utf-8").splitlines()
    lines[4] = '{"text": "cut off here", "label'  # line 5: not JSON
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = copy_run(trained_run, tmp_path / "run")
    assert_refused(
        capsys, ["classify", "train", "--data", str(data), "--out", str(run), "--overwrite", *TINY],
        tmp_path, "train.jsonl:5", "not valid JSON",
    )


def test_overwrite_with_a_bad_override_keeps_the_old_run(tmp_path, capsys, trained_run):
    data = write_labelled(tmp_path / "train.jsonl")
    run = copy_run(trained_run, tmp_path / "run")
    before = tree(tmp_path)
    rc, err = run_cli(capsys, ["classify", "train", "--data", str(data), "--out", str(run), "--overwrite", *TINY,
                               "train.lr=-1"])
    assert rc == 2 and "lr" in err
    assert tree(tmp_path) == before


def test_a_stale_replaced_sibling_is_named_and_kept(tmp_path, capsys, trained_run):
    data = write_labelled(tmp_path / "train.jsonl")
    run = copy_run(trained_run, tmp_path / "run")
    copy_run(trained_run, replaced_path(run))  # an --overwrite killed before the new run's first checkpoint
    msg = assert_refused(
        capsys, ["classify", "train", "--data", str(data), "--out", str(run), "--overwrite", *TINY],
        tmp_path, f".run{REPLACED_SUFFIX}",
    )
    assert "mv " in msg


# ------------------------------------------------------------------------------- classify: replacing a run
def test_overwrite_replaces_an_old_run(tmp_path, capsys, trained_run):
    run = copy_run(trained_run, tmp_path / "run")
    assert main(["plot", str(run)]) == 0  # curves.png: a run file the new run does not write
    assert (run / "curves.png").is_file()
    old_config = (run / "config.json").read_bytes()
    data = write_labelled(tmp_path / "three.jsonl", n=30, labels=("a", "b", "c"))
    rc, err = run_cli(capsys, ["classify", "train", "--data", str(data), "--out", str(run), "--overwrite", *TINY])
    assert rc == 0, err
    assert not (run / "curves.png").exists()
    assert (run / "config.json").read_bytes() != old_config
    assert json.loads((run / "config.json").read_text(encoding="utf-8"))["labels"] == ["a", "b", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "three.jsonl"]  # no set-aside sibling left
    from lmlab.recipes.classify import ClassifyRecipe

    pipe = ClassifyRecipe.load(run)
    assert pipe.predict(["good film"])[0]["label"] in {"a", "b", "c"}


def test_a_run_killed_during_start_up_can_be_replaced_but_not_resumed(tmp_path, capsys):
    data = write_labelled(tmp_path / "train.jsonl")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "tokenizer.json").write_text('{"partial": tru', encoding="utf-8")  # killed mid-start: no config.json
    (run / ".config.json.abc123.tmp").write_bytes(b'{"format_')
    msg = assert_refused(
        capsys, ["classify", "train", "--data", str(data), "--out", str(run), "--resume", *TINY], tmp_path,
        "--overwrite",
    )
    assert "stopped before its config was saved" in msg
    rc, err = run_cli(capsys, ["classify", "train", "--data", str(data), "--out", str(run), "--overwrite", *TINY])
    assert rc == 0, err
    assert (run / "config.json").is_file() and not (run / ".config.json.abc123.tmp").exists()
    from lmlab.recipes.classify import ClassifyRecipe

    assert ClassifyRecipe.load(run).predict(["good"])[0]["label"] in {"pos", "neg"}


# ------------------------------------------------------------------------------- other families, (a)-(c)
def _family_argv(family: str, data: str, out: str) -> list[str]:
    quick = ["train.max_steps=1", "train.num_threads=1", "train.progress=false"]
    if family == "lm":
        return ["lm", "train", "--data", data, "--out", out, "--overwrite", "--preset", "ptb-small", *quick]
    if family == "gpt":
        return ["gpt", "train", "--data", data, "--out", out, "--overwrite", *quick]
    if family == "embed":
        return ["embed", "train", "--corpus", data, "--out", out, "--overwrite", "--epochs", "1", "--threads", "1"]
    if family == "seq2seq":
        return ["seq2seq", "train", "--src", data, "--out", out, "--overwrite", "--preset", "tour-small", *quick]
    raise AssertionError(family)


def _family_data(family: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if family == "seq2seq":
        path = folder / "pairs.tsv"
        path.write_text("".join(f"a b {i}\tc d {i}\n" for i in range(20)), encoding="utf-8")
    else:
        path = folder / "corpus.txt"
        path.write_text("".join(f"the cat sat on the mat {i}\n" for i in range(50)), encoding="utf-8")
    return path


FAMILIES = ["lm", "gpt", "embed", "seq2seq"]


@pytest.mark.parametrize("family", FAMILIES)
def test_other_families_refuse_the_working_directory(family, tmp_path, monkeypatch, capsys):
    data = _family_data(family, tmp_path)
    user_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert_refused(capsys, _family_argv(family, data.name, "."), tmp_path, "working directory")


@pytest.mark.parametrize("family", FAMILIES)
def test_other_families_refuse_a_parent_of_the_data(family, tmp_path, capsys):
    data = _family_data(family, tmp_path / "project")
    assert_refused(capsys, _family_argv(family, str(data), str(tmp_path / "project")), tmp_path, "project")


@pytest.mark.parametrize(
    "family",
    FAMILIES,
)
def test_other_families_refuse_a_parent_of_the_data_in_a_data_subfolder(family, tmp_path, capsys):
    data = _family_data(family, tmp_path / "project" / "data")
    assert_refused(capsys, _family_argv(family, str(data), str(tmp_path / "project")), tmp_path, "holds the input")


@pytest.mark.parametrize("family", FAMILIES)
def test_other_families_refuse_a_folder_that_is_not_a_run(family, tmp_path, capsys):
    data = _family_data(family, tmp_path / "in")
    user_files(tmp_path / "mine")
    assert_refused(capsys, _family_argv(family, str(data), str(tmp_path / "mine")), tmp_path, "notes.txt", "sub/")


# ------------------------------------------------------------------------------- StagedRunDir and its checks
def fake_run(path: Path) -> Path:
    (path / "checkpoints" / "step_4").mkdir(parents=True)
    (path / "config.json").write_text('{"format_version": 1, "model_type": "classifier"}\n', encoding="utf-8")
    (path / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (path / "metrics.jsonl").write_text('{"step": 4, "loss": 0.5}\n', encoding="utf-8")
    (path / "checkpoints" / "step_4" / "optimizer.pt").write_bytes(b"\x00\x01state")
    (path / "checkpoints" / "last.json").write_text('{"dir": "step_4"}', encoding="utf-8")
    return path


def test_staged_failure_before_a_checkpoint_restores_the_old_run(tmp_path):
    run = fake_run(tmp_path / "run")
    before = tree(tmp_path)
    with pytest.raises(RuntimeError, match="bad data"), StagedRunDir(run) as path:
        assert path == run and not any(run.iterdir())  # a fresh folder; the old run is set aside
        assert replaced_path(run).is_dir()
        (run / "config.json").write_text("{}", encoding="utf-8")
        (run / "tokenizer.json").write_text("{}", encoding="utf-8")
        raise RuntimeError("bad data")
    assert tree(tmp_path) == before


def test_staged_failure_after_a_checkpoint_keeps_the_new_run(tmp_path):
    run = fake_run(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt), StagedRunDir(run):
        (run / "config.json").write_text('{"new": true}', encoding="utf-8")
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.json").write_text('{"dir": "step_1"}', encoding="utf-8")
        raise KeyboardInterrupt
    assert (run / "config.json").read_text(encoding="utf-8") == '{"new": true}'
    assert not (run / "model.safetensors").exists() and not (run / "metrics.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_staged_success_deletes_the_old_run(tmp_path):
    run = fake_run(tmp_path / "run")
    with StagedRunDir(run):
        (run / "config.json").write_text('{"new": true}', encoding="utf-8")
    assert tree(run) == {"config.json": hashlib.sha256(b'{"new": true}').hexdigest()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_staged_failure_of_a_new_folder_removes_it(tmp_path):
    with pytest.raises(RuntimeError), StagedRunDir(tmp_path / "new" / "run"):
        raise RuntimeError
    assert not (tmp_path / "new" / "run").exists()


def test_staged_resume_keeps_everything(tmp_path):
    run = fake_run(tmp_path / "run")
    before = tree(tmp_path)
    with pytest.raises(RuntimeError), StagedRunDir(run, replace=False):
        raise RuntimeError
    assert tree(tmp_path) == before


def test_a_stale_replaced_sibling_is_reported(tmp_path):
    run = fake_run(tmp_path / "run")
    fake_run(tmp_path / f".run{REPLACED_SUFFIX}")
    before = tree(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(CheckpointError, match=rf"\.run{REPLACED_SUFFIX} holds a run .*\(mv "):
            check_new_run_dir(run, overwrite=overwrite)
    assert tree(tmp_path) == before


def test_check_new_run_dir_deletes_nothing_and_prepare_run_dir_keeps_user_files(tmp_path, monkeypatch):
    user_files(tmp_path / "mine")
    (tmp_path / "mine" / "config.json").write_text("{}", encoding="utf-8")  # a run file among the user's files
    before = tree(tmp_path)
    for call in (check_new_run_dir, checkpoint.prepare_run_dir):
        with pytest.raises(CheckpointError, match="notes.txt"):
            call(tmp_path / "mine", overwrite=True)
        assert tree(tmp_path) == before
    monkeypatch.chdir(tmp_path / "mine" / "sub")
    for target in (tmp_path / "mine" / "sub", tmp_path / "mine", Path(".."), Path(".")):
        with pytest.raises(CheckpointError, match="working directory"):
            checkpoint.prepare_run_dir(target, overwrite=True)
    assert tree(tmp_path) == before


# ------------------------------------------------------------------------------- issue 21 item 9, small faults
def test_a_run_killed_before_its_first_best_weights_loads_from_its_checkpoint(tmp_path, capsys):
    data = write_labelled(tmp_path / "train.jsonl")
    out = tmp_path / "run"
    assert main(["classify", "train", "--data", str(data), "--out", str(out), *TINY]) == 0
    (out / "model.safetensors").unlink()  # as if killed after a checkpoint but before the first evaluation
    capsys.readouterr()
    assert main(["classify", "predict", str(out), "a fine film"]) == 0
    captured = capsys.readouterr()
    assert "using the last checkpoint's weights" in captured.err
    assert captured.out.strip()


def test_negative_epochs_are_refused_even_with_max_steps():
    from lmlab.config import TrainConfig, config_from_dict
    from lmlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.epochs must be >= 0, got -1"):
        config_from_dict(TrainConfig, {"epochs": -1, "max_steps": 10})
    with pytest.raises(ConfigError, match=r"train.lr must be a finite number"):
        config_from_dict(TrainConfig, {"lr": float("nan")})


def test_run_files_follow_the_umask_not_0600(tmp_path):
    from lmlab.checkpoint import atomic_write_json, save_tensors

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        import torch

        save_tensors(tmp_path / "w.safetensors", {"w": torch.zeros(2)})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644


def test_vocab_files_follow_the_umask_too(tmp_path):
    from lmlab.data.vocab import build_vocab

    old = os.umask(0o022)
    try:
        build_vocab([["a", "b", "a"]]).save(tmp_path / "vocab.json")
    finally:
        os.umask(old)
    assert (tmp_path / "vocab.json").stat().st_mode & 0o777 == 0o644


def test_weights_that_do_not_fit_the_model_are_named_by_both_readers(tmp_path):
    """load_weights and stream_weights share one message naming missing, unexpected and wrongly shaped tensors."""
    import pytest
    import torch

    from lmlab.checkpoint import CheckpointError, load_weights, save_weights, stream_weights

    path = tmp_path / "w.safetensors"
    save_weights(path, torch.nn.Linear(3, 2))
    for read in (load_weights, stream_weights):
        with pytest.raises(CheckpointError, match=r"shape mismatch weight \(2, 3\) != \(2, 4\)"):
            read(path, torch.nn.Linear(4, 2))
        with pytest.raises(CheckpointError, match=r"missing 0.weight, 0.bias; unexpected bias, weight"):
            read(path, torch.nn.Sequential(torch.nn.Linear(3, 2)))


def test_weights_saved_as_laid_out_read_back_the_same_through_every_reader(tmp_path):
    """A column-major weight is stored transposed (contiguous, named in the file's metadata): map_weights maps it
    back as a zero-copy column-major view of the file, the other readers as the same values; the shape checks
    name the tensor's own shape; a tensor of another dtype is read (converted) instead of mapped."""
    import pytest
    import torch

    from lmlab.checkpoint import (
        CheckpointError,
        load_tensors,
        load_weights,
        map_weights,
        read_safetensors_header,
        save_tensors_as_laid_out,
        stream_weights,
        transposed_names,
    )

    torch.manual_seed(0)
    src = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Linear(8, 2))
    src[0].weight.data = src[0].weight.data.t().contiguous().t()  # (8, 3), strides (1, 8)
    path = tmp_path / "w.safetensors"
    assert save_tensors_as_laid_out(path, src.state_dict()) == ["0.weight"]
    assert transposed_names(path) == {"0.weight"}
    assert read_safetensors_header(path)[0]["0.weight"]["shape"] == [3, 8]  # stored (in, out)
    assert torch.equal(load_tensors(path)["0.weight"], src[0].weight)
    for read in (load_weights, stream_weights, map_weights):
        dest = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Linear(8, 2))
        read(path, dest)
        for name, value in src.state_dict().items():
            assert torch.equal(dest.state_dict()[name], value), (read.__name__, name)
        with pytest.raises(CheckpointError, match=r"shape mismatch 0.weight \(8, 3\) != \(8, 4\)"):
            read(path, torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)))
    mapped = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Linear(8, 2))
    mapped[1].bias.data = mapped[1].bias.data.double()
    map_weights(path, mapped)
    size = path.stat().st_size
    assert mapped[0].weight.stride() == (1, 8) and mapped[0].weight.untyped_storage().nbytes() == size
    assert mapped[1].weight.untyped_storage().nbytes() == size  # a view of the file, not a copy
    assert mapped[1].bias.dtype == torch.float64 and torch.equal(mapped[1].bias, src[1].bias.double())
    mapped[0].weight.data.mul_(2)  # a private map: the file keeps its values
    assert torch.equal(load_tensors(path)["0.weight"], src[0].weight)


def test_resuming_a_run_that_reached_max_steps_trains_no_further(tmp_path, capsys, trained_run):
    """--resume of a finished run (train.max_steps=2, or a smaller max_steps) takes no optimizer step more: the
    weights, the metrics and the checkpoint stay those of step 2."""
    data = write_labelled(tmp_path / "train.jsonl")
    run = copy_run(trained_run, tmp_path / "run")
    weights, metrics = (run / "model.safetensors").read_bytes(), (run / "metrics.jsonl").read_bytes()
    for steps in ("train.max_steps=2", "train.max_steps=1"):
        rc, err = run_cli(capsys, ["classify", "train", "--data", str(data), "--out", str(run), "--resume",
                                   *TINY, steps])
        assert rc == 0, err
        assert json.loads((run / "checkpoints" / "last.json").read_text())["step"] == 2
        assert (run / "model.safetensors").read_bytes() == weights
        assert (run / "metrics.jsonl").read_bytes() == metrics


def test_a_damaged_trainer_state_is_a_one_line_error(tmp_path, capsys, trained_run):
    data = write_labelled(tmp_path / "train.jsonl")
    run = copy_run(trained_run, tmp_path / "run")
    folder = run / "checkpoints" / json.loads((run / "checkpoints" / "last.json").read_text())["dir"]
    (folder / "trainer_state.json").write_text('{"step": "two"}', encoding="utf-8")
    assert_refused(
        capsys, ["classify", "train", "--data", str(data), "--out", str(run), "--resume", *TINY, "train.max_steps=4"],
        tmp_path, "trainer_state.json: trainer state is damaged", "--overwrite",
    )

