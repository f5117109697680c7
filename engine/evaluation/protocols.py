"""Published evaluation protocols as data: ``<family>/protocols/<name>.toml`` in the package.

Each file holds ``name``, ``family``, ``[upstream]`` (public repository -> the revision read) and
the sections ``[settings]`` (the protocol's options, as ``evaluate`` names them), ``[evaluator]``
and ``[split]``, each entry ``{ value = ..., source = "<repository> <file>:<line>" }``. A flag given
to ``evaluate`` overrides a setting; metrics.json records the preset, its sources and what was
overridden or scaled.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

from motionfleet.core.options import UsageError

SECTIONS = ("settings", "evaluator", "split")
DEFAULT = {"dhvae": "interhuman"}  # the protocol a family's evaluation follows without --protocol


@dataclass(frozen=True)
class ProtocolPreset:
    name: str
    family: str
    upstream: dict[str, str]  # public repository -> revision its sources were read at
    settings: dict
    evaluator: dict
    split: dict
    sources: dict[str, str]  # "<section>.<key>" -> "<repository> <file>:<line>"

    def record(self) -> dict:
        """What metrics.json keeps of the preset."""
        return {"name": self.name, "upstream": self.upstream, "settings": self.settings, "evaluator": self.evaluator,
                "split": self.split, "sources": self.sources}


def _folder(family: str):
    return resources.files(f"motionfleet.{family}") / "protocols"


def names(family: str) -> tuple[str, ...]:
    folder = _folder(family)
    return tuple(sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))) \
        if folder.is_dir() else ()


def load(family: str, name: str) -> ProtocolPreset:
    known = names(family)
    if name not in known:
        raise UsageError(f"--protocol {name}: {family} has {', '.join(known) or 'no protocol presets'}")
    raw = tomllib.loads((_folder(family) / f"{name}.toml").read_text(encoding="utf-8"))
    sections, sources = {}, {}
    for section in SECTIONS:
        sections[section] = {key: entry["value"] for key, entry in raw.get(section, {}).items()}
        sources.update({f"{section}.{key}": entry["source"] for key, entry in raw.get(section, {}).items()})
    return ProtocolPreset(raw["name"], raw["family"], dict(raw.get("upstream", {})), sources=sources, **sections)
