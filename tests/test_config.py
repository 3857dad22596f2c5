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
)
from lmlab.errors import ConfigError
from lmlab.models.classifier import ClassifierConfig
from lmlab.recipes.classify import ClassifyRecipe, ClassifyRunConfig
from lmlab.schedules import lr_at


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown key; did you mean 'lr'"):
        config_from_dict(ClassifyRunConfig, {"train": {"lrr": 0.1}})


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
