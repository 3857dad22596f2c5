"""Typed configs: strict loading, overrides, presets, and LR schedules."""

from __future__ import annotations

import math

import pytest

from lmlab.config import (
    TrainConfig,
    config_from_dict,
    config_to_dict,
    list_presets,
    load_preset,
    parse_overrides,
    resolve_short_overrides,
    suggest_key,
)
from lmlab.errors import ConfigError
from lmlab.models.classifier import ClassifierConfig
from lmlab.recipes.classify import ClassifyRecipe, ClassifyRunConfig
from lmlab.schedules import lr_at


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown key; did you mean 'lr'"):
        config_from_dict(ClassifyRunConfig, {"train": {"lrr": 0.1}})


def test_unknown_key_suggestions_know_other_libraries_names():
    # issue 21 item 9: train.learning_rate suggested early_stopping_mode (they share letters, not a word)
    msg = ""
    for section in ({"train": {"learning_rate": 0.1, "n_epochs": 2, "batch": 8, "grad_clipping": 1.0, "Batch-Size": 4}},
                    {"model": {"hiden_dim": 8, "n_layers": 2, "dropout_rate": 0.1},
                     "data": {"val_fraction": 0.2, "min_frequency": 2}}):
        with pytest.raises(ConfigError) as err:
            config_from_dict(ClassifyRunConfig, section)
        msg += str(err.value)
    for wrong, right in [("train.learning_rate", "lr"), ("train.n_epochs", "epochs"), ("train.batch", "batch_size"),
                         ("train.grad_clipping", "grad_clip"), ("train.Batch-Size", "batch_size"),
                         ("model.hiden_dim", "hidden_dim"), ("model.n_layers", "num_layers"),
                         ("model.dropout_rate", "dropout"), ("data.val_fraction", "val_split"),
                         ("data.min_frequency", "min_freq")]:
        assert f"config.{wrong}: unknown key; did you mean '{right}'?" in msg
    assert "early_stopping_mode" not in msg
    # an alias is suggested only when the config has its target; a key like nothing lists the valid keys
    assert suggest_key("n_head", ["num_heads", "num_layers"]) == "num_heads"
    assert suggest_key("n_head", ["num_layers", "hidden_dim"]) is None
    assert suggest_key("min_freq", ["min_count", "window"]) == "min_count"
    with pytest.raises(ConfigError, match=r"train\.x_y_z: unknown key; valid keys: optimizer, lr, "):
        config_from_dict(ClassifyRunConfig, {"train": {"x_y_z": 1}})


def test_short_override_suggestion_names_its_section():
    sections = {"model": ClassifierConfig, "train": TrainConfig}
    with pytest.raises(ConfigError, match=r"override 'learning_rate': unknown key; did you mean 'lr' \(train\.lr=0\.1\)\?"):
        resolve_short_overrides({"learning_rate": 0.1}, sections)
    with pytest.raises(ConfigError, match=r"override 'qqq': unknown key; name its section too \(model\.KEY, train\.KEY\)"):
        resolve_short_overrides({"qqq": 1}, sections)


def test_wrong_types_are_all_reported_at_once():
    with pytest.raises(ConfigError) as err:
        config_from_dict(TrainConfig, {"lr": "fast", "epochs": 1.5, "optimizer": "adma", "progress": "yes"})
    msg = str(err.value)
    assert "config.lr: expected a number, got 'fast'" in msg
    assert "config.epochs: expected an integer" in msg
    assert "did you mean 'adam'" in msg
    assert "config.progress: expected true/false" in msg


def test_round_trip_and_int_to_float():
    cfg = config_from_dict(TrainConfig, {"lr": 1, "betas": [0.9, 0.98]})
    assert isinstance(cfg.lr, float) and cfg.betas == [0.9, 0.98]
    assert config_from_dict(TrainConfig, config_to_dict(cfg)) == cfg


def test_validate_hook_runs():
    with pytest.raises(ConfigError, match="dropout must be in"):
        config_from_dict(ClassifierConfig, {"dropout": 1.5})


def test_overrides_parse_yaml_scalars_and_nesting():
    assert parse_overrides(["train.lr=1e-3", "model.lstm_dims=[8, 4]", "x=true"]) == {
        "train": {"lr": 1e-3},
        "model": {"lstm_dims": [8, 4]},
        "x": True,
    }
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        parse_overrides(["epochs"])


def test_short_overrides_resolve_to_their_section():
    sections = {"model": ClassifierConfig, "train": TrainConfig}
    assert resolve_short_overrides({"epochs": 2}, sections) == {"train": {"epochs": 2}}
    with pytest.raises(ConfigError, match="ambiguous"):
        resolve_short_overrides({"dropout": 0.1}, {"model": ClassifierConfig, "other": ClassifierConfig})
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        resolve_short_overrides({"epoch": 2}, sections)


def test_every_shipped_classify_preset_loads_and_builds():
    names = list_presets("classify")
    assert {"seed-lstm", "bilstm"} <= set(names)
    for name in names:
        run = ClassifyRecipe.resolve(name)
        run.model.vocab_size, run.model.num_classes = 100, 2
        from lmlab.models.classifier import TextClassifier

        TextClassifier(run.model)


def test_unknown_preset_suggests_nearest():
    with pytest.raises(ConfigError, match="did you mean 'bilstm'"):
        load_preset("bilstn", "classify")


def test_bad_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"p\.yaml:\d+: invalid YAML"):
        load_preset(str(bad), "classify")


def test_lr_schedules():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, schedule="cosine", min_lr=0.1)
    assert lr_at(0, cfg, 110) == pytest.approx(0.1)
    assert lr_at(9, cfg, 110) == pytest.approx(1.0)
    assert lr_at(10, cfg, 110) == pytest.approx(1.0)
    assert lr_at(60, cfg, 110) == pytest.approx(0.1 + 0.5 * 0.9 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, cfg, 110) == pytest.approx(0.1)
    lin = TrainConfig(lr=1.0, schedule="linear", min_lr=0.0)
    assert lr_at(50, lin, 100) == pytest.approx(0.5)
    step = TrainConfig(lr=1.0, schedule="step", lr_decay=0.5, decay_start_epoch=4)
    # Zaremba et al.: full lr for the first 4 epochs, then halved every epoch
    assert [lr_at(0, step, 1, epoch=e) for e in range(7)] == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125]
