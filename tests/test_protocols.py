"""Protocol presets as data (``dhvae/protocols/interhuman.toml``): the published sizes with their
public sources, flags over the preset, and the built-in set's scaled sizes."""

import re

import pytest

from motionfleet.cli import main
from motionfleet.dhvae.evaluate import BUILTIN_SIZES, SIZES, EvaluatorSpec, evaluator_spec, protocol_sizes
from motionfleet.evaluation import protocols


def test_the_interhuman_preset_is_shipped_with_the_published_sizes_and_their_sources():
    assert "interhuman" in protocols.names("dhvae")  # read through the installed package (package-data)
    preset = protocols.load("dhvae", "interhuman")
    assert preset.settings == {"replications": 20, "match_batch": 96, "diversity_pairs": 300, "mm_texts": 100,
                               "mm_repeats": 30, "mm_pairs": 10}
    assert preset.evaluator == {"layout": "interclip", "preset": "official"}
    assert preset.split == {"test": "split/test.txt", "ignore": "split/ignore_list.txt"}
    assert set(preset.sources) == {f"{section}.{key}" for section in ("settings", "evaluator", "split")
                                   for key in getattr(preset, section)}
    assert all(re.search(r"\S+\.(py|yaml):\d+", source) for source in preset.sources.values())
    assert preset.upstream["ZenGengChin/dhvae-official"].startswith("accaa49")
    assert re.fullmatch(r"[0-9a-f]{40}", preset.upstream["tr3e/InterGen"])


def test_flags_override_the_preset_and_only_the_built_in_set_is_scaled():
    preset = protocols.load("dhvae", "interhuman")
    protocol, scaled = protocol_sizes(preset, {"replications": 3}, builtin=False)
    assert (protocol.replications, protocol.match_batch, protocol.mm_texts) == (3, 96, 100) and scaled == {}

    protocol, scaled = protocol_sizes(preset, {"match_batch": 4, "embed_batches_per_shard": 2}, builtin=True)
    assert protocol.match_batch == 4 and protocol.embed_batches_per_shard == 2
    assert set(scaled) == set(SIZES) - {"match_batch"}
    assert scaled["replications"] == {"preset": 20, "used": BUILTIN_SIZES["replications"]}
    assert all(getattr(protocol, name) == BUILTIN_SIZES[name] for name in scaled)


def test_the_evaluator_is_the_presets_unless_given_and_tiny_only_for_built_in_dummy_weights():
    preset = protocols.load("dhvae", "interhuman")
    assert evaluator_spec(EvaluatorSpec(), preset, builtin=False) == (EvaluatorSpec(preset="official"), {})
    spec, scaled = evaluator_spec(EvaluatorSpec(), preset, builtin=True)
    assert spec.preset == "tiny" and scaled == {"evaluator_preset": {"preset": "official", "used": "tiny"}}
    given = EvaluatorSpec(checkpoint="interclip.ckpt")  # real weights keep the released size
    assert evaluator_spec(given, preset, builtin=True) == (EvaluatorSpec(checkpoint="interclip.ckpt", preset="official"), {})
    assert evaluator_spec(EvaluatorSpec(preset="official"), preset, builtin=True)[0].preset == "official"


def test_an_unknown_protocol_is_a_one_line_usage_error(tmp_path, capsys):
    assert main(["evaluate", "--family", "dhvae", "--protocol", "nope", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--protocol" in err[0] and "interhuman" in err[0]
    with pytest.raises(Exception, match="interhuman"):
        protocols.load("dhvae", "nope")
