"""ipi-mts: i-PI force drivers and integrators for multiple-time-step and learned-map MD."""

__version__ = "0.1.0"
