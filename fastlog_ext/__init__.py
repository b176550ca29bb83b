"""Compiled core of fastlog (Cython + C). Import it through :mod:`fastlog`."""
