"""``motionfleet leaderboard CONFIG.toml``: the config is untrusted. Every value is checked as its
flag would be, before anything runs; a bad one is one line, exit 1, and nothing is written."""

import pytest

from motionfleet.cli import main
from motionfleet.evaluation.leaderboard import read_config


def board(top: str = "", name: str = '"tiny"', seeds: str = "[0, 1]", entry: str = "", settings: str = "",
          published: str = "") -> str:
    """A config of one entry with a line added at the top, in the entry, in its settings or in its
    published numbers (a [entry.published] table, only where ``published`` is given)."""
    return (f'protocol = "interhuman"\n{top}\n[[entry]]\nname = {name}\nseeds = {seeds}\n{entry}\n'
            f'[entry.settings]\npreset = "tiny"\n{settings}\n'
            + (f'[entry.published]\npaper = "InterGen"\ntable = "Table 1"\n{published}\n' if published else ""))


def write(tmp_path, text: str):
    path = tmp_path / "board.toml"
    path.write_text(text)
    return path


def test_a_valid_config_reads_with_each_value_as_its_flag_parses_it(tmp_path):
    config = read_config(write(tmp_path, board(top="workers = 0\n[protocol_settings]\nreplications = 2",
                                               settings="steps = 2\nguidance_scale = 1")))
    entry, = config.entries
    assert config.workers == 0 and config.protocol_settings == {"replications": 2}
    assert entry.seeds == (0, 1) and entry.settings == {"preset": "tiny", "steps": 2, "guidance_scale": 1.0}


def test_published_numbers_read_as_value_and_interval_with_their_source(tmp_path):
    config = read_config(write(tmp_path, board(published="fid = 5.918\nr_precision_top1 = { value = 0.371, interval = 0.004 }",
                                               top='[real.published]\npaper = "InterGen"\ntable = "Table 1, Real"\n'
                                                   'r_precision_top1 = 0.452')))
    entry, = config.entries
    assert (entry.published.paper, entry.published.table) == ("InterGen", "Table 1")
    assert entry.published.values == {"fid": (5.918, None), "r_precision_top1": (0.371, 0.004)}
    assert config.real_published.values == {"r_precision_top1": (0.452, None)}
    assert read_config(write(tmp_path, board())).entries[0].published is None


def test_a_seed_listed_twice_is_refused_not_counted_twice(tmp_path, capsys):
    config = write(tmp_path, board(seeds="[0, 0]"))
    with pytest.raises(ValueError, match="lists seed 0 twice"):
        read_config(config)
    assert main(["leaderboard", str(config), "--out", str(tmp_path / "out")]) == 1
    assert "lists seed 0 twice" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


BAD = {
    "negative workers": ({"top": "workers = -1"}, "workers = -1: must be >= 0"),
    "string workers": ({"top": 'workers = "2"'}, "workers = '2' is not an integer"),
    "boolean seed": ({"seeds": "[true]"}, "seed = True is not an integer"),
    "negative seed": ({"seeds": "[-3]"}, "seed = -3: must be >= 0"),
    "name with ../": ({"name": '"../escape"'}, "needs a name of letters"),
    "family of another protocol": ({"entry": 'family = "scorehoi"'}, "protocol interhuman evaluates dhvae"),
    "unknown top-level setting": ({"top": "worker = 2"}, "unknown setting 'worker'"),
    "unknown entry key": ({"entry": "seed = 2"}, "unknown setting 'seed'"),
    "unknown protocol setting": ({"top": "[protocol_settings]\nreplication = 2"}, "unknown setting 'replication'"),
    "unknown entry setting": ({"settings": "stepz = 2"}, "unknown setting 'stepz'"),
    "a setting the config owns": ({"settings": "workers = 2"}, "unknown setting 'workers'"),
    "a string for a number": ({"settings": 'eta = "0.5"'}, "eta = '0.5' is not a number"),
    "an out-of-range setting": ({"settings": "guidance_scale = -1"}, "guidance_scale = -1: must be >= 0.0"),
    "a step count of 0": ({"settings": "steps = 0"}, "steps = 0: must be >= 1"),
    "a missing dataset": ({"top": 'dataset = "no/such/folder"'}, "does not exist"),
    "a dataset that is a file": ({"top": 'dataset = "{config}"'}, "is not a folder"),
    "a missing checkpoint": ({"entry": 'checkpoint = "no/such/last.ckpt"'}, "does not exist"),
    "a checkpoint that is a number": ({"entry": "checkpoint = 5"}, "checkpoint = 5 is not a string"),
    "an unknown published metric": ({"published": "fidd = 5.9"}, "[entry.published]: unknown setting 'fidd'"),
    "a published nan": ({"published": "fid = nan"}, "fid = nan is not a finite number"),
    "a published inf": ({"published": "fid = inf"}, "fid = inf is not a finite number"),
    "a published string": ({"published": 'fid = "5.9"'}, "fid = '5.9' is not a number"),
    "a published boolean": ({"published": "fid = true"}, "fid = True is not a number"),
    "a published negative interval": ({"published": "fid = {{ value = 5.9, interval = -0.1 }}"}, "interval = -0.1: must be >= 0"),
    "a published interval without value": ({"published": "fid = {{ interval = 0.1 }}"}, "fid needs a value"),
    "an unknown key beside the value": ({"published": "fid = {{ value = 5.9, std = 0.1 }}"}, "unknown setting 'std'"),
    "published numbers with no metric": ({"entry": '[entry.published]\npaper = "P"\ntable = "T"'}, "gives no metric"),
    "published numbers without their paper": ({"entry": '[entry.published]\nfid = 5.9'}, "needs paper = "),
    "a paper that is a number": ({"entry": '[entry.published]\npaper = 1\ntable = "T1"\nfid = 5.9'}, "got 1"),
    "published numbers that are not a table": ({"entry": "published = 5.9"}, "[entry.published] is not a table"),
    "an unknown real-data key": ({"top": '[real]\nexpected = 1'}, "[real]: unknown setting 'expected'"),
    "an unknown real-data metric": ({"top": '[real.published]\npaper = "P"\ntable = "T"\nrprec = 0.45'},
                                    "[real.published]: unknown setting 'rprec'"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_value_is_one_line_exit_1_and_nothing_is_written(case, tmp_path, capsys):
    parts, reason = BAD[case]
    config = tmp_path / "board.toml"
    config.write_text(board(**{key: value.format(config=config) for key, value in parts.items()}))
    with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace(".", r"\.")):
        read_config(config)
    out = tmp_path / "out"
    assert main(["leaderboard", str(config), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and reason in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board.toml"]  # nothing written, in --out or beside it
