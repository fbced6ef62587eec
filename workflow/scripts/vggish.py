"""Rule vggish: snakemake -> ssp.vggish_stage.run_vggish for one shard."""
import sys
from pathlib import Path

# src/ on the path: conda envs carry the dependencies, not the package itself.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from ssp import logs  # noqa: E402
from ssp.config import Config  # noqa: E402
from ssp.datasets import read_manifest  # noqa: E402
from ssp.vggish_stage import run_vggish  # noqa: E402

logs.setup(snakemake.log[0])  # noqa: F821
run_vggish(read_manifest(snakemake.input.manifest), snakemake.wildcards.shard,  # noqa: F821
           snakemake.input.audio, snakemake.output[0], Config.from_dict(snakemake.config))  # noqa: F821
