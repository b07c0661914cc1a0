"""Recipes: fields override defaults, unknown keys and wrong types are errors naming key and file."""

from pathlib import Path

import pytest

from pairspec.config import ConfigError, RunConfig, load_recipe, save_resolved, to_dict

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_recipe_overrides_only_given_fields(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = write(tmp_path, "run: {name: x}\ndata: {store: s.zarr, labels: [teff, logg]}\ntrain: {epochs: 3, lr: 1}\n")
    cfg = load_recipe(p)
    assert cfg.run.name == "x" and cfg.train.epochs == 3
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # int accepted for a float field
    assert cfg.train.batch_size == RunConfig().train.batch_size  # untouched default
    assert cfg.data.labels == ("teff", "logg")
    assert cfg.data.store == str(tmp_path / "s.zarr")  # relative to the working directory
    assert cfg.run_dir == Path("runs") / "x"


def test_relative_paths_follow_the_working_directory_not_the_recipe(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "elsewhere").mkdir()
    p = write(tmp_path / "recipes", "data: {store: demo/apogee.zarr}\nrun: {out_dir: runs/a}\n")
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = load_recipe(p)
    assert cfg.data.store == str(tmp_path / "elsewhere" / "demo" / "apogee.zarr")
    assert cfg.run_dir == tmp_path / "elsewhere" / "runs" / "a"
    url = load_recipe(write(tmp_path, "data: {store: 'memory://x.zarr'}\n"))
    assert url.data.store == "memory://x.zarr"


@pytest.mark.parametrize("text,key", [
    ("train: {epocs: 3}\n", "train.epocs"),
    ("trian: {epochs: 3}\n", "trian"),
    ("model: {preset: tsn_tiny, heads: 4}\n", "model.heads"),
])
def test_unknown_key_names_key_and_file(tmp_path, text, key):
    p = write(tmp_path, text, "my_recipe.yaml")
    with pytest.raises(ConfigError) as err:
        load_recipe(p)
    assert key in str(err.value) and "my_recipe.yaml" in str(err.value)


@pytest.mark.parametrize("text,key", [
    ("train: {epochs: three}\n", "train.epochs"),
    ("train: {epochs: 2.5}\n", "train.epochs"),
    ("train: {compile: 1}\n", "train.compile"),
    ("data: {labels: teff}\n", "data.labels"),
    ("data: {mode: pairs}\n", "data.mode"),
    ("train: {bf16: maybe}\n", "train.bf16"),
    ("train: 5\n", "train"),
])
def test_wrong_types_are_clear_errors(tmp_path, text, key):
    p = write(tmp_path, text, "bad.yaml")
    with pytest.raises(ConfigError) as err:
        load_recipe(p)
    assert key in str(err.value) and "bad.yaml" in str(err.value)


def test_overrides_and_resolved_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = write(tmp_path, "train: {epochs: 3}\n")
    cfg = load_recipe(p, overrides=["train.epochs=7", "train.bf16=false", "data.labels=[fe_h]",
                                    "train.max_steps=null"])
    assert cfg.train.epochs == 7 and cfg.train.bf16 is False and cfg.data.labels == ("fe_h",)
    with pytest.raises(ConfigError, match="train.epocs"):
        load_recipe(p, overrides=["train.epocs=1"])
    with pytest.raises(ConfigError, match="section.field=value"):
        load_recipe(p, overrides=["epochs"])
    out = save_resolved(cfg, tmp_path / "run" / "config.yaml")
    again = load_recipe(out)
    assert again == cfg and to_dict(again)["data"]["labels"] == ["fe_h"]


def test_missing_or_invalid_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="list.yaml"):
        load_recipe(write(tmp_path, "- a\n- b\n", "list.yaml"))


@pytest.mark.parametrize("name", ["demo.yaml", "apogee_dr17.yaml"])
def test_shipped_recipes_load(name):
    cfg = load_recipe(REPO / "recipes" / name)
    assert cfg.data.labels == ("teff", "logg", "fe_h", "mg_fe")
    assert cfg.train.epochs > 0


def test_scientific_notation_without_dot_is_a_float(tmp_path):
    from pairspec.config import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  lr: 2e-3\n  weight_decay: 1E-2\n")
    config = load_recipe(recipe, overrides=["train.min_lr_frac=5e-2"])
    assert config.train.lr == 2e-3 and config.train.weight_decay == 1e-2 and config.train.min_lr_frac == 0.05
    with pytest.raises(Exception, match="train.lr"):
        load_recipe(recipe, overrides=["train.lr=fast"])


def test_every_recipe_field_has_a_row_in_its_section_of_docs_recipes_md():
    """docs/recipes.md documents each recipe field in a table under `## <section>`: a field added to
    pairspec.config without its row fails here."""
    import dataclasses
    import re

    text = (REPO / "docs" / "recipes.md").read_text()
    for section in ("run", "data", "model", "train"):
        match = re.search(rf"^## {section}\n(.*?)(?=^## )", text, re.DOTALL | re.MULTILINE)
        assert match, f"docs/recipes.md has no '## {section}' section"
        fields = [f.name for f in dataclasses.fields(type(getattr(RunConfig(), section)))]
        missing = [name for name in fields if f"| `{name}` |" not in match.group(1)]
        assert not missing, f"docs/recipes.md '## {section}' has no row for {missing}"
