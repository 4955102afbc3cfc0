"""Every config field has a one-line description for --list-fields (diffrl_jax/field_docs.py)."""

import dataclasses

import pytest

from diffrl_jax.config_overrides import describe_fields
from diffrl_jax.experiment import make_config
from diffrl_jax.field_docs import field_docs


@pytest.mark.parametrize("cls", list(field_docs()), ids=lambda c: c.__name__)
def test_every_field_has_one_line_and_no_line_names_a_missing_field(cls):
    docs = field_docs()[cls]
    names = {f.name for f in dataclasses.fields(cls)}
    assert sorted(names - set(docs)) == [], "fields without a description"
    assert sorted(set(docs) - names) == [], "descriptions of fields that do not exist"
    for name, text in docs.items():
        assert text.strip() and "\n" not in text and len(text) <= 110, name


def test_the_four_config_classes_are_covered():
    assert sorted(c.__name__ for c in field_docs()) == [
        "DiffusionPolicyConfig", "GaussianPolicyConfig", "OffPolicyConfig", "OnPolicyConfig"]


@pytest.mark.parametrize("algo", ["diffsac", "ppo"])
def test_list_fields_shows_each_fields_description(algo):
    lines = describe_fields(make_config(algo, "toy/bandit")).splitlines()
    assert all("  # " in line for line in lines)
    assert any(ln.startswith("diffusion.num_steps:") and "# K: denoising steps per action" in ln
               for ln in lines)
    assert any(ln.startswith("total_env_steps:") and "# environment steps per seed" in ln
               for ln in lines)
