"""Rules captions, captions_study: snakemake -> the captions stage (ssp.stages.STAGES) for one shard."""
import copy
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp.config import Config  # noqa: E402
from ssp.io import logs  # noqa: E402
from ssp.stages import STAGES  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
raw = copy.deepcopy(snakemake.config)  # noqa: F821
if "q1" in snakemake.wildcards.keys():  # noqa: F821  (rule captions_study: one Q1 wording of the study)
    raw.setdefault("captions", {})["q1_variant"] = snakemake.wildcards.q1  # noqa: F821
# in this process, or in captions.python's interpreter (MiniCPM-o's transformers without conda)
STAGES["captions"].run(Config.from_dict(raw), snakemake.input.manifest, snakemake.wildcards.shard,  # noqa: F821
                       snakemake.output[0], snakemake.input.frames, snakemake.log[0])  # noqa: F821
