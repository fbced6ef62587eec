"""The Table 2 variants and the studies' overrides, without torch: planning (``snakemake -n``,
``ssp check-config``) imports this, not the network.

A variant is a preset of SSP's three switches: the pre-mask (Eq. 2), the post-mask loss (Eq. 5)
and the text prompts (``att``, or VTA: Algorithm 1). A study's variant adds an override to a
preset's name: ``-pm<weight>`` (Fig. 5, the post-mask weight) or ``-q1<a-d>`` (Fig. 6/7, the Q1
wording).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    premask: bool
    postmask: bool
    text: str  # none | att | vta


VARIANTS = {
    "baseline": Variant(premask=False, postmask=False, text="none"),
    "premask": Variant(premask=True, postmask=False, text="none"),
    "premask_postmask": Variant(premask=True, postmask=True, text="none"),
    "text_att": Variant(premask=False, postmask=False, text="att"),
    "text_vta": Variant(premask=False, postmask=False, text="vta"),
    "full_no_postmask": Variant(premask=True, postmask=False, text="vta"),
    "full": Variant(premask=True, postmask=True, text="vta"),
}


def parse_variant(name: str) -> tuple[str, dict]:
    """'full' -> ('full', {}); 'full-pm5' -> ('full', {'postmask_weight': 5.0}) (Fig. 5 sweep);
    'full-q1b' -> ('full', {'q1_variant': 'b'}) (prompt study, Fig. 6/7)."""
    m = re.fullmatch(r"([a-z_0-9]+)(?:-pm([0-9]+(?:\.[0-9]+)?)|-q1([a-d]))?", name)
    if not m or m.group(1) not in VARIANTS and m.group(1) != "stage1":
        raise ValueError(f"unknown variant {name!r}: one of {sorted(VARIANTS)}, optionally -pm<weight> or -q1<a-d>")
    extra = {}
    if m.group(2):
        extra["postmask_weight"] = float(m.group(2))
    if m.group(3):
        extra["q1_variant"] = m.group(3)
    return m.group(1), extra


def with_overrides(cfg, extra: dict):
    """The config with a study's override applied (post-mask weight sweep; the Q1 variant chooses
    the captions the job reads, not a setting)."""
    if "postmask_weight" in extra:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, postmask_weight=extra["postmask_weight"]))
    return cfg


def study_variants(cfg) -> dict[str, list[str]]:
    """Each table's variants: ``table2`` (``train.variants``), ``ablations`` (every Table 2 row),
    ``postmask_sweep`` (Fig. 5: the full model with each lambda'_mask of ``studies.postmask_weights``)
    and ``prompt_study`` (Fig. 6/7: the full model with captions from each Q1 wording)."""
    return {
        "table2": list(cfg.train.variants),
        "ablations": list(VARIANTS),
        "postmask_sweep": [f"full-pm{w:g}" for w in cfg.studies.postmask_weights],
        "prompt_study": [f"full-q1{q}" for q in cfg.studies.q1_variants],
    }
