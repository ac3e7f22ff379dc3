"""IMOD-style file I/O: MRC stacks and volumes, .tlt, .xf, exclude lists, SerialEM .mdoc."""
