"""agebench: reproducible facial age estimation benchmarks."""

__version__ = "0.11.0"
