"""Typed `--set` overrides and named presets: coercion, nested merges, error messages, and the
authors' preset (resolved and validated only; it is far too large to compile or train here)."""

import dataclasses
import math

import pytest

from diffrl_jax.config_overrides import (
    config_fields,
    describe_fields,
    field_info,
    override_config,
    parse_overrides,
)
from diffrl_jax.policies import DiffusionPolicyConfig, GaussianPolicyConfig
from diffrl_jax.presets import (
    NAMED_PRESETS,
    PRESETS,
    apply_overrides,
    named_preset_overrides,
    preset_names,
    preset_overrides,
)
from diffrl_jax.training import trainer_for
from diffrl_jax.training.off_policy import OffPolicyConfig
from diffrl_jax.training.on_policy import OnPolicyConfig
from diffrl_jax.validation import ConfigError

ALGOS = ("sac", "diffsac", "wpo", "diffwpo", "ppo", "diffppo")
ENV = "brax/inverted_pendulum"


def config_class(algo):
    return trainer_for(algo).config_class


def resolve(algo, preset="default", items=(), env=ENV):
    """make_config's resolution without the environment registry: defaults -> named preset
    -> parsed overrides -> validate()."""
    config = config_class(algo)(algo=algo, env=env)
    config = apply_overrides(config, named_preset_overrides(preset, algo, env))
    return apply_overrides(config, parse_overrides(items, config)).validate()


# ---- coercion --------------------------------------------------------------------------------


@pytest.mark.parametrize("item, field, expected", [
    ("actor_lr=1e-3", "actor_lr", 1e-3),
    ("discount=1", "discount", 1.0),
    ("num_envs=64", "num_envs", 64),
    ("total_env_steps=50_000_000", "total_env_steps", 50_000_000),
    ("total_env_steps=5e7", "total_env_steps", 50_000_000),
    ("normalize_obs=false", "normalize_obs", False),
    ("normalize_obs=True", "normalize_obs", True),
    ("learn_alpha=0", "learn_alpha", False),
    ("learn_alpha=1", "learn_alpha", True),
    ("learn_alpha=yes", "learn_alpha", True),
    ("learn_alpha=NO", "learn_alpha", False),
    ("estimator=full_chain", "estimator", "full_chain"),
    ("estimator='full_chain'", "estimator", "full_chain"),
    ("episode_length=none", "episode_length", None),
    ("episode_length=None", "episode_length", None),
    ("episode_length=500", "episode_length", 500),
    ("critic_hidden=256,256", "critic_hidden", (256, 256)),
    ("critic_hidden=(256, 256)", "critic_hidden", (256, 256)),
    ("critic_hidden=[128,64,32]", "critic_hidden", (128, 64, 32)),
    ("critic_hidden=(512,)", "critic_hidden", (512,)),
    ("critic_hidden=512", "critic_hidden", (512,)),
    (" tau = 0.01 ", "tau", 0.01),
    ("actor-lr=2e-4", "actor_lr", 2e-4),
])
def test_coercion_to_the_declared_type(item, field, expected):
    out = parse_overrides([item], OffPolicyConfig())
    assert list(out) == [field]
    value = out[field]
    assert value == expected and type(value) is type(expected)


def test_types_are_exact():
    out = parse_overrides(["discount=1", "num_envs=8", "critic_hidden=64,64"], OffPolicyConfig())
    assert isinstance(out["discount"], float)
    assert type(out["num_envs"]) is int
    assert all(type(v) is int for v in out["critic_hidden"])


def test_on_policy_fields():
    config = OnPolicyConfig(algo="ppo")
    out = parse_overrides(["gae_lambda=0.98", "num_minibatches=64", "anneal_lr=true",
                           "advantage_normalization=none", "value_hidden=64,64"], config)
    assert out == dict(gae_lambda=0.98, num_minibatches=64, anneal_lr=True,
                       advantage_normalization="none", value_hidden=(64, 64))


def test_nested_overrides_merge_into_one_replaced_value():
    base = OffPolicyConfig(diffusion=DiffusionPolicyConfig(hidden_sizes=(32, 32), dt0=0.06))
    out = parse_overrides(["diffusion.num_steps=16", "diffusion.dt0=0.1",
                           "diffusion.hidden_sizes=128,128", "diffusion.learn_friction=yes",
                           "gaussian.activation=gelu", "actor_lr=1e-3"], base)
    assert set(out) == {"diffusion", "gaussian", "actor_lr"}
    # the base's nested value is the starting point: fields not given keep its values
    assert out["diffusion"] == DiffusionPolicyConfig(
        num_steps=16, dt0=0.1, hidden_sizes=(128, 128), learn_friction=True)
    assert out["gaussian"] == GaussianPolicyConfig(activation="gelu")
    config = apply_overrides(base, out).validate()
    assert config.diffusion.num_steps == 16 and config.diffusion.hidden_sizes == (128, 128)
    assert base.diffusion.num_steps == 8  # the base is not modified


def test_nested_base_is_the_preset_resolved_value():
    # the diffppo pendulum preset's small control net survives an override of another field
    config = resolve("diffppo", items=["diffusion.num_steps=4"])
    assert config.diffusion.num_steps == 4
    assert config.diffusion.hidden_sizes == PRESETS[("diffppo", ENV)]["diffusion"].hidden_sizes
    assert config.diffusion.dt0 == 0.06


def test_class_as_base_means_defaults_and_override_config():
    assert parse_overrides(["diffusion.dt0=0.2"], OffPolicyConfig)["diffusion"] == \
        DiffusionPolicyConfig(dt0=0.2)
    config = override_config(OnPolicyConfig(), ["clip_eps=0.1", "diffusion.schedule=cosine"])
    assert config.clip_eps == 0.1 and config.diffusion.schedule == "cosine"
    assert parse_overrides([], OffPolicyConfig()) == {}


# ---- errors name the field -------------------------------------------------------------------


def test_unknown_field_lists_allowed_names_sorted():
    with pytest.raises(ConfigError, match="unknown config field 'learning_rate'") as err:
        parse_overrides(["learning_rate=1e-3"], OffPolicyConfig())
    names = sorted(f for f in OffPolicyConfig.__dataclass_fields__)
    assert str(names) in str(err.value)


def test_unknown_field_suggests_a_close_name():
    with pytest.raises(ConfigError, match="did you mean 'actor_lr'"):
        parse_overrides(["actr_lr=1e-3"], OffPolicyConfig())


def test_unknown_nested_field_lists_the_nested_fields():
    with pytest.raises(ConfigError, match=r"unknown config field 'diffusion\.steps'") as err:
        parse_overrides(["diffusion.steps=4"], OffPolicyConfig())
    assert str(sorted(DiffusionPolicyConfig.__dataclass_fields__)) in str(err.value)
    assert "did you mean 'diffusion.num_steps'" in str(err.value)


@pytest.mark.parametrize("item, field, type_name", [
    ("actor_lr=fast", "actor_lr", "float"),
    ("num_envs=1.5", "num_envs", "int"),
    ("num_envs=many", "num_envs", "int"),
    ("normalize_obs=maybe", "normalize_obs", "bool"),
    ("episode_length=long", "episode_length", "int | None"),
    ("critic_hidden=256,x", "critic_hidden", r"tuple\[int, \.\.\.\]"),
    ("critic_hidden=256,,256", "critic_hidden", r"tuple\[int, \.\.\.\]"),
    ("diffusion.num_steps=eight", "diffusion.num_steps", "int"),
])
def test_unparseable_value_names_field_type_and_text(item, field, type_name):
    text = item.split("=", 1)[1]
    with pytest.raises(ConfigError, match=rf"'{field}' expects {type_name}, could not parse "
                                          rf"'{text}'"):
        parse_overrides([item], OffPolicyConfig())


def test_field_given_twice():
    with pytest.raises(ConfigError, match=r"'actor_lr' is set twice: 'actor_lr=1' and "
                                          r"'actor_lr=2'"):
        parse_overrides(["actor_lr=1", "actor_lr=2"], OffPolicyConfig())
    with pytest.raises(ConfigError, match=r"'diffusion\.dt0' is set twice"):
        parse_overrides(["diffusion.dt0=0.1", "diffusion.dt0=0.2"], OffPolicyConfig())


@pytest.mark.parametrize("item", ["actor_lr", "actor_lr 1e-3", "=1e-3", ".dt0=1"])
def test_malformed_item_shows_the_expected_form(item):
    with pytest.raises(ConfigError, match=r"FIELD=VALUE or NESTED\.FIELD=VALUE"):
        parse_overrides([item], OffPolicyConfig())


def test_a_single_string_is_not_a_list_of_items():
    with pytest.raises(ConfigError, match="sequence"):
        parse_overrides("actor_lr=1e-3", OffPolicyConfig())


def test_nested_config_is_set_field_by_field():
    with pytest.raises(ConfigError, match=r"'diffusion' is a nested DiffusionPolicyConfig; set "
                                          r"its fields one by one as diffusion\.FIELD=VALUE"):
        parse_overrides(["diffusion=small"], OffPolicyConfig())
    with pytest.raises(ConfigError, match=r"'actor_lr' \(float\) has no fields"):
        parse_overrides(["actor_lr.value=1"], OffPolicyConfig())


# ---- invalid values: the config's own checks name the field and the allowed values -----------


@pytest.mark.parametrize("algo, item, message", [
    ("diffsac", "algo=ppo", r"OffPolicyConfig\.algo must be one of \['sac', 'diffsac', 'wpo', "
                            r"'diffwpo'\], got 'ppo'"),
    ("diffsac", "estimator=exact", r"OffPolicyConfig\.estimator must be one of "
                                   r"\['per_step', 'full_chain'\], got 'exact'"),
    ("diffsac", "discount_mode=step", r"OffPolicyConfig\.discount_mode must be one of "
                                      r"\['env', 'diffusion'\]"),
    ("diffppo", "advantage_normalization=zscore",
     r"OnPolicyConfig\.advantage_normalization must be one of \['center', 'standardize', "
     r"'none'\], got 'zscore'"),
    ("diffppo", "algo=sac", r"OnPolicyConfig\.algo must be one of \['ppo', 'diffppo', 'reppo', "
                            r"'diffreppo'\]"),
    ("diffppo", "discount=1.5", r"OnPolicyConfig\.discount must lie in \[0\.0, 1\.0\]"),
    ("sac", "num_envs=0", r"OffPolicyConfig\.num_envs must be an integer >= 1, got 0"),
    ("sac", "critic_hidden=()", r"OffPolicyConfig\.critic_hidden must be a non-empty tuple"),
])
def test_validate_errors_propagate(algo, item, message):
    with pytest.raises(ConfigError, match=message):
        resolve(algo, items=[item])


@pytest.mark.parametrize("item, message", [
    ("diffusion.schedule=quadratic",
     r"'diffusion'.*DiffusionPolicyConfig\.schedule must be one of \['linear', 'cosine', "
     r"'constant'\], got 'quadratic'"),
    ("diffusion.activation=swish", r"DiffusionPolicyConfig\.activation must be one of"),
    ("diffusion.num_steps=0", r"DiffusionPolicyConfig\.num_steps must be an integer >= 1"),
    ("gaussian.min_std=-1", r"GaussianPolicyConfig\.min_std must be a finite number > 0"),
])
def test_nested_checks_propagate(item, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides([item], OffPolicyConfig())


# ---- listing ---------------------------------------------------------------------------------


def test_config_fields_cover_every_leaf_with_dotted_names():
    names = config_fields(OffPolicyConfig)
    assert names[:3] == ["algo", "env", "backend"]
    assert "diffusion.num_steps" in names and "gaussian.hidden_sizes" in names
    assert "diffusion" not in names and len(names) == len(set(names))
    # every listed name can be set
    info = {name: (tp, value) for name, tp, value in field_info(OnPolicyConfig())}
    assert info["episode_length"] == ("int | None", None)
    assert info["value_hidden"] == ("tuple[int, ...]", (256, 256))
    assert info["diffusion.dt0"] == ("float", 0.125)


def test_every_listed_field_round_trips_through_parse():
    for cls in (OffPolicyConfig, OnPolicyConfig):
        config = cls()
        items = []
        for name, _, value in field_info(config):
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            items.append(f"{name}={text}")
        assert apply_overrides(config, parse_overrides(items, config)) == config


def test_describe_fields_one_line_per_field():
    config = resolve("diffsac")
    text = describe_fields(config)
    lines = text.splitlines()
    assert len(lines) == len(config_fields(OffPolicyConfig))
    line = next(ln for ln in lines if ln.startswith("critic_hidden:"))
    assert line.split(":", 1)[1].split("  #")[0].split() == ["tuple[int,", "...]", "=", "128,128"]
    assert any(ln.startswith("diffusion.schedule:") and "one of: linear, cosine, constant" in ln
               for ln in lines)
    assert any(ln.startswith("algo:") and "one of: sac, diffsac, wpo, diffwpo" in ln
               for ln in lines)
    assert any(ln.startswith("episode_length:") and ln.split("  #")[0].endswith("int | None = None")
               for ln in lines)


# ---- named presets ---------------------------------------------------------------------------


def test_preset_names_and_unknown_preset():
    assert preset_names() == sorted(NAMED_PRESETS)
    assert {"authors", "default"} <= set(preset_names())
    with pytest.raises(ConfigError, match=r"unknown preset 'paper'; allowed: \[.*'authors'.*"
                                          r"'default'.*\]"):
        named_preset_overrides("paper", "sac", ENV)
    with pytest.raises(ConfigError, match=r"preset 'authors' has no settings for algorithm "
                                          r"'dqn'"):
        named_preset_overrides("authors", "dqn", ENV)


@pytest.mark.parametrize("algo", ALGOS)
def test_default_preset_is_the_env_preset(algo):
    assert named_preset_overrides("default", algo, ENV) == preset_overrides(algo, ENV)
    assert named_preset_overrides("default", algo, "brax/ant") == PRESETS[(algo, "*")]
    assert NAMED_PRESETS["default"][algo] == PRESETS[(algo, "*")]


@pytest.mark.parametrize("algo", ALGOS)
def test_authors_preset_resolves_and_validates(algo):
    config = resolve(algo, "authors")
    assert config.algo == algo and config.env == ENV
    assert config.total_env_steps == 50_000_000
    assert config.max_grad_norm == 0.5
    diff = algo.startswith("diff")
    ppo = algo.endswith("ppo")
    assert config.num_envs == (2048 if ppo else 1024)
    assert config.actor_lr == config.critic_lr == (1e-4 if ppo else 1e-3)
    if diff:
        d = config.diffusion
        assert (d.num_steps, d.prior_std, d.dt0, d.schedule, d.schedule_min) == \
            (8, 3.0, 0.125, "linear", 0.17)
        assert d.friction == 0.25 and d.learn_friction == (algo == "diffppo")
        assert d.dt_per_dimension == (algo == "diffwpo")
        assert (d.hidden_sizes, d.activation) == ((256, 256, 256, 256), "gelu")
        assert config.discount_mode == "diffusion" and config.discount == 0.999
    else:
        assert config.discount_mode == "env"
    if ppo:
        assert (config.clip_eps, config.num_epochs, config.num_minibatches) == (0.2, 12, 64)
        # DiffPPO's c is fixed at 2e-4 (spec section 5), the Gaussian's learned from 0.01
        assert (config.learn_entropy_coef, config.entropy_coef) == \
            ((False, 2e-4) if diff else (True, 0.01))
        assert config.entropy_coef_lr == 1e-4
        assert config.target_entropy_multiplier == 8.0
        assert config.gae_lambda == (0.98 if diff else 0.95)
    else:
        assert config.learn_alpha and config.init_alpha == 0.01 and config.alpha_lr == 1e-3
    if algo in ("wpo", "diffwpo"):
        # spec section 5: 0.02 on K * KL, i.e. 0.0025 per step at K = 8 (K = 1: 0.02)
        assert config.kl_bound == pytest.approx(0.0025 if diff else 0.02)
        assert config.target_entropy_multiplier == 8.0
        assert not config.natural_gradient


def test_authors_diffusion_matches_spec_section_7():
    # section 7: K = 8, sigma_p = 3, dt0 = 0.125 linear (m = 0.17), friction 0.25, 4 x 256 GELU;
    # 50M steps, 1024 envs (2048 PPO), lr 1e-3 (PPO 1e-4), clip 0.5, gamma_d 0.999, lambda 0.98
    authors = NAMED_PRESETS["authors"]
    assert dataclasses.replace(authors["diffppo"]["diffusion"], learn_friction=False) == \
        authors["diffsac"]["diffusion"]
    d = authors["diffwpo"]["diffusion"]
    assert d.num_steps == 8 and d.prior_std == 3.0 and d.dt0 == 0.125 and d.friction == 0.25
    assert math.isclose(0.999 ** d.num_steps, 0.992, abs_tol=1e-3)
    assert authors["diffppo"]["gae_lambda"] == 0.98
    assert authors["wpo"]["kl_bound"] == 0.02


def test_authors_preset_then_overrides():
    config = resolve("diffsac", "authors", ["num_envs=16", "total_env_steps=20_000",
                                            "diffusion.num_steps=4"])
    assert config.num_envs == 16 and config.total_env_steps == 20_000
    # the preset's other diffusion settings stay
    assert config.diffusion.num_steps == 4 and config.diffusion.hidden_sizes == (256,) * 4
    assert config.init_alpha == 0.01


def test_authors_preset_fields_exist():
    for algo, overrides in NAMED_PRESETS["authors"].items():
        names = set(config_class(algo).__dataclass_fields__)
        assert set(overrides) <= names, (algo, set(overrides) - names)


def test_apply_overrides_unknown_field_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown config fields \['learning_rate'\]"):
        apply_overrides(OffPolicyConfig(), {"learning_rate": 1e-3})
