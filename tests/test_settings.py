"""Settings written once, on their dataclass field (``core.options.setting``): the flag, its
default, help and checks, the build of the dataclass and the job's description all come from
that one declaration."""

from dataclasses import dataclass, fields, replace
from typing import Optional

import pytest

from motionfleet.core import jobs, registry
from motionfleet.core.options import (
    UsageError,
    build_from,
    existing_file,
    file_setting,
    options_of,
    output_settings,
    positive,
    setting,
    settings_from,
)


@dataclass(frozen=True)
class Spec:
    preset: str = "small"  # an engine option: taken by its field's name
    weights: Optional[str] = file_setting("a weights file", existing_file)


@dataclass(frozen=True)
class Settings:
    steps: int = setting(50, "DDIM steps", low=1, high=1000)
    scale: float = setting(3.5, "guidance scale", low=0.0)
    target_fps: float = setting(30.0, "frames per second", flag="fps", checks=(positive,))
    folded: bool = setting(True, "run the unfolded reference", flag="unfolded", inverted=True)
    encoder: str = setting("minilm", "the prompt encoder", choices=("minilm", "clip"))
    size: tuple[int, int] = setting((8, 16), "a size", type=lambda text: tuple(map(int, text.split("x"))), metavar="HxW")
    rounds: int = setting(10, "rounds (overrides a preset)", low=1, flag_default=None)
    prefetch: int = setting(4, "items queued ahead", low=1, scheduling=True)
    batch_size: int = 64  # an engine option, not declared here


def option(name: str, *classes):
    return {o.name: o for o in options_of(*(classes or (Settings,)))}[name]


def test_a_setting_declared_once_is_a_flag_with_its_default_help_and_checks():
    steps = option("steps")
    assert (steps.flag, steps.default, steps.help, steps.type, steps.metavar) == ("--steps", 50, "DDIM steps", int, "N")
    assert steps.parse("7") == 7
    with pytest.raises(UsageError, match=r"^--steps: must be >= 1, got 0$"):
        steps.parse(0)
    with pytest.raises(UsageError, match=r"^--steps: must be <= 1000, got 1001$"):
        steps.parse(1001)
    with pytest.raises(UsageError, match=r"^--scale: must be a finite number, got nan$"):
        option("scale").parse("nan")
    with pytest.raises(UsageError, match=r"^--encoder: unknown value 'bert'; choose one of minilm, clip$"):
        option("encoder").parse("bert")
    weights = option("weights", Spec)
    assert (weights.default, weights.metavar, weights.checks) == (None, "PATH", (existing_file,))
    assert option("size").parse("2x3") == (2, 3) and option("size").metavar == "HxW"
    assert option("rounds").default is None  # unset unless given


def test_a_renamed_or_inverted_flag_keeps_its_public_name_and_maps_to_its_field():
    fps, unfolded = option("fps"), option("unfolded")
    assert fps.flag == "--fps" and fps.default == 30.0 and fps.checks[-1] is positive
    with pytest.raises(UsageError, match=r"^--fps: must be > 0, got 0.0$"):
        fps.parse("0")
    assert unfolded.switch and unfolded.default is False  # the switch is off where the field is on
    assert {o.name for o in options_of(Settings)}.isdisjoint({"target_fps", "folded"})
    built = settings_from(Settings, {"fps": 12.5, "unfolded": True})
    assert (built.target_fps, built.folded) == (12.5, False)
    assert settings_from(Settings, {"fps": 30.0, "unfolded": False}).folded is True


def test_build_fills_each_dataclass_from_the_checked_values():
    values = {o.name: o.default for o in options_of(Spec, Settings)}
    assert build_from(Spec, Settings)(values) == (Spec(), Settings())  # one default, the field's
    given = {**values, "preset": "big", "weights": "w.pt", "steps": 7, "encoder": "clip", "size": [2, 3],
             "rounds": 3, "batch_size": 5, "demo": True}
    spec, settings = build_from(Spec, Settings)(given)
    assert spec == Spec("big", "w.pt")
    assert (settings.steps, settings.encoder, settings.rounds, settings.batch_size) == (7, "clip", 3, 5)
    assert settings.size == (2, 3)  # a list (JSON, the API) for a tuple field becomes a tuple
    assert settings_from(Settings, {"rounds": None}).rounds == 10  # unset: the field's default


def test_a_scheduling_setting_stays_out_of_the_job_description():
    settings = Settings()
    described = output_settings(settings)
    assert "prefetch" not in described and "batch_size" in described and "target_fps" in described
    assert output_settings(settings_from(Settings, {"prefetch": 9})) == described
    assert [f.name for f in fields(Settings) if f.metadata.get("scheduling")] == ["prefetch"]


def test_options_come_in_field_order_or_the_order_given_and_a_flag_is_declared_once():
    assert [o.name for o in options_of(Settings, Spec)] == ["steps", "scale", "fps", "unfolded", "encoder", "size",
                                                            "rounds", "prefetch", "weights"]
    assert [o.name for o in options_of(Settings, Spec, order=("weights", "fps"))][:3] == ["weights", "fps", "steps"]
    with pytest.raises(ValueError, match="order names target_fps, which no field"):
        options_of(Settings, order=("target_fps",))

    @dataclass(frozen=True)
    class Twice:
        fps: float = setting(25.0, "frames per second")

    with pytest.raises(ValueError, match="declare the same flag"):
        options_of(Settings, Twice)


def test_a_bound_a_kind_does_not_take_is_refused_where_the_setting_is_written():
    with pytest.raises(TypeError, match="takes no such bound"):
        setting("minilm", "an encoder", low=1)
    with pytest.raises(TypeError, match="takes no such bound"):
        setting(3, "a count", above=0)


@pytest.mark.parametrize("command", sorted(registry.commands()))
def test_each_familys_flags_default_to_its_dataclasses_defaults(command):
    """A flag's default and its field's are one value: the job built from the flags' defaults holds
    the dataclasses' defaults, the engine's options (preset, batch size) included; only ``--device``
    differs (auto: resolved where the job runs)."""
    family = registry.get(command)
    values = {o.name: o.default for o in jobs.all_options(family)}
    spec, settings = family.build({**values, "device": "cpu", "demo": False})
    assert spec.preset == type(spec)().preset == family.default_preset
    assert settings == replace(type(settings)(), device="cpu")
