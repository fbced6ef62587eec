"""Rule captions: snakemake -> ssp.captions_stage.run_captions for one shard."""
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp import logs  # noqa: E402
from ssp.captions import make_captioner  # noqa: E402
from ssp.captions_stage import run_captions  # noqa: E402
from ssp.config import Config  # noqa: E402
from ssp.datasets import read_manifest  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
cfg = Config.from_dict(snakemake.config)  # noqa: F821
if "q1" in snakemake.wildcards.keys():  # noqa: F821  (rule captions_study: one Q1 wording of the study)
    import dataclasses

    cfg = dataclasses.replace(cfg, captions=dataclasses.replace(cfg.captions, q1_variant=snakemake.wildcards.q1))  # noqa: F821
run_captions(read_manifest(snakemake.input.manifest), snakemake.wildcards.shard,  # noqa: F821
             snakemake.input.frames, snakemake.output[0], make_captioner(cfg, cfg.dataset_root))  # noqa: F821
