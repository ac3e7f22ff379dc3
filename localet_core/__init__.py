"""localet_core: the torch engine of localet (I/O, tilt geometry, filtering, back-projection,
the localized network, training, reconstruction, FSC, simulation)."""
__version__ = "0.1.0"
