"""The bottom layer: Jittor's configuration, atomic files, checkpoint file formats, errors and the
command-line guard. Imports nothing of the project (only the standard library, numpy, and torch
or Jittor lazily where a file format needs it); every other package may import it.
"""
