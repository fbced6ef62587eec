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
    # Fig. 6: the full model with the plain cross attention ("att") in place of VTA
    "full_att": Variant(premask=True, postmask=True, text="att"),
}
TABLE2 = ("baseline", "premask", "premask_postmask", "text_att", "text_vta", "full_no_postmask", "full")


PREMASK_TEST = ("stage1", "empty", "flow", "none")   # train.premask_test's choices (ssp.model.premask)


def parse_variant(name: str) -> tuple[str, dict]:
    """'full' -> ('full', {}); 'full-pm5' -> ('full', {'postmask_weight': 5.0}) (Fig. 5 sweep);
    'full-q1b' -> ('full', {'q1_variant': 'b'}) (prompt study, Fig. 6/7); 'full-ptempty' ->
    ('full', {'premask_test': 'empty'}) (the pre-mask test study: the same trained model, another
    stand-in for M_GT at test)."""
    m = re.fullmatch(r"([a-z_0-9]+)(?:-pm([0-9]+(?:\.[0-9]+)?)|-q1([a-d])|-pt([a-z0-9]+))?", name)
    if not m or m.group(1) not in VARIANTS and m.group(1) != "stage1" or m.group(4) and m.group(4) not in PREMASK_TEST:
        raise ValueError(f"unknown variant {name!r}: one of {sorted(VARIANTS)}, optionally -pm<weight>, -q1<a-d> "
                         f"or -pt<{'|'.join(PREMASK_TEST)}>")
    extra = {}
    if m.group(2):
        extra["postmask_weight"] = float(m.group(2))
    if m.group(3):
        extra["q1_variant"] = m.group(3)
    if m.group(4):
        extra["premask_test"] = m.group(4)
    return m.group(1), extra


def trained_as(name: str) -> str:
    """The variant whose trained model a variant uses: a pre-mask test study variant
    ('full-ptempty') predicts with its preset's model ('full'); any other, its own."""
    return parse_variant(name)[0] if "premask_test" in parse_variant(name)[1] else name


def with_overrides(cfg, extra: dict):
    """The config with a study's override applied (the post-mask weight sweep; the pre-mask test
    study's stand-in; the Q1 variant chooses the captions the job reads, not a setting)."""
    changes = {k: extra[k] for k in ("postmask_weight", "premask_test") if k in extra}
    if changes:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes))
    return cfg


def stage1_settings(cfg):
    """The config the binary stage-1 model of a semantic run trains with: ``train.stage1``'s keys
    in place of the run's ``train`` ones (AAVS trains it with its AVS script's schedule)."""
    if not cfg.train.stage1:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **cfg.train.stage1))


def study_variants(cfg) -> dict[str, list[str]]:
    """Each table's variants: ``table2`` (``train.variants``), ``ablations`` (every Table 2 row),
    ``postmask_sweep`` (Fig. 5: the full model with each lambda'_mask of ``studies.postmask_weights``)
    ``prompt_study`` (Fig. 6/7: the full model, with VTA and with "att", on captions from each Q1
    wording) and
    ``premask_test_study`` (the full model, trained once, predicting with each stand-in for M_GT)."""
    return {
        "table2": list(cfg.train.variants),
        "ablations": list(TABLE2),
        "postmask_sweep": [f"full-pm{w:g}" for w in cfg.studies.postmask_weights],
        "prompt_study": [f"{m}-q1{q}" for q in cfg.studies.q1_variants for m in ("full", "full_att")],
        "premask_test_study": [f"full-pt{c}" for c in PREMASK_TEST],
    }
