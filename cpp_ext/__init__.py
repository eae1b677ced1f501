"""C++/CUDA sources of the ``aesipe::pamr`` op library, shipped as package data and compiled on first
use by ``aesipe.ops._build`` (this file only makes ``aesipe.cpp_ext`` a regular package so that
``importlib.resources.files`` finds the sources)."""
