"""SSP (Stepping Stone Plus) for audio-visual segmentation: pipeline and trainer."""
__version__ = "0.1.0"
