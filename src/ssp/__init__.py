"""SSP (Stepping Stone Plus) for audio-visual segmentation: pipeline and trainer."""
__version__ = "0.1.0"


def package_root():
    """The folder holding the ``ssp`` package (``src/``): what another interpreter's PYTHONPATH needs."""
    from pathlib import Path

    return Path(__file__).resolve().parent.parent


def env_with_package() -> dict:
    """This process's environment with the package first on PYTHONPATH, for a child process that
    runs ``python -m ssp...`` where the package is not installed (conda envs, another venv)."""
    import os

    paths = (str(package_root()), os.environ.get("PYTHONPATH"))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
