from pathlib import Path

import pytest

from llmgan.config import RunConfig, apply_overrides, config_from_dict, field_help, load_config
from llmgan.errors import LlmganError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)


def test_shipped_configs_exist():
    assert {"twon-reply.yaml", "demo.yaml"} <= {p.name for p in CONFIGS}


def test_overrides_parse_types():
    cfg = load_config(None, ["train.steps=7", "train.lr=3e-5", "discriminator.condition_on_prompt=true",
                             "model.name=null", "discriminator.loss=bradley_terry"])
    assert cfg.train.steps == 7 and cfg.train.lr == pytest.approx(3e-5)
    assert cfg.discriminator.condition_on_prompt is True and cfg.model.name is None
    assert cfg.discriminator.loss == "bradley_terry"


def test_unknown_key_suggests_close_match():
    with pytest.raises(LlmganError, match=r"unknown config key 'discriminator.hiden_layer' \(did you mean 'discriminator.hidden_layer'\?\).*valid keys"):
        load_config(None, ["discriminator.hiden_layer=3"])
    with pytest.raises(LlmganError, match="unknown config key 'trian'"):
        config_from_dict({"trian": {"steps": 1}})


@pytest.mark.parametrize("override, words", [
    ("train.steps=ten", "must be int"),
    ("discriminator.loss=hinge", "one of 'bce', 'bradley_terry'"),
    ("train.beta=[1]", "must be float"),
    ("generation.num_generations=1", "num_generations must be >= 2"),
    ("discriminator.width=250", "divisible by discriminator.heads"),
    ("generation.temperature=0", "temperature must be > 0"),
    ("train.steps=0", "train.steps must be >= 1"),
])
def test_bad_values_rejected_before_any_model_loads(override, words):
    with pytest.raises(LlmganError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


def test_end_mark_is_refused_where_it_would_say_nothing():
    assert load_config(None, ["discriminator.mark_end=true", "data.response_cap_quantile=0.95"]).discriminator.mark_end
    with pytest.raises(LlmganError, match="mark_end with discriminator.length_matched"):
        load_config(None, ["discriminator.mark_end=true", "discriminator.length_matched=true",
                           "data.response_cap_quantile=0.95"])
    with pytest.raises(LlmganError, match="a sample cut at the cap would read as ended"):
        load_config(None, ["discriminator.mark_end=true", "generation.max_new_tokens=48",
                           "discriminator.max_response_tokens=48"])
    assert load_config(None, ["discriminator.mark_end=true", "generation.max_new_tokens=49",
                              "discriminator.max_response_tokens=48"]).discriminator.mark_end


def test_override_needs_equals():
    with pytest.raises(LlmganError, match="section.key=value"):
        apply_overrides({}, ["train.steps"])


def test_config_files_never_execute(tmp_path):
    bad = tmp_path / "evil.yaml"
    bad.write_text("train: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(LlmganError, match="not valid YAML"):
        load_config(bad)


def test_every_field_has_help():
    import dataclasses

    from llmgan import config as c

    for cls in (c.ModelSettings, c.LoraSettings, c.DataSettings, c.GenerationSettings, c.DiscriminatorSettings,
                c.RewardSettings, c.TrainSettings, c.SelectionSettings, c.RunConfig):
        helps = field_help(cls)
        assert all(helps[f.name] for f in dataclasses.fields(cls)), cls.__name__
