"""pairspec: TwinSpecNet labels and denoised spectra from multi-visit spectroscopic surveys.

Importing the package is cheap: no torch, no astropy, no file access. Import submodules for work.
"""

__version__ = "0.1.0"
