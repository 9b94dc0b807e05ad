"""accelsim: a cycle-level, bit-accurate simulator of DNN accelerators for quantized networks."""

__version__ = "0.1.0"
