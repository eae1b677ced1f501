"""C++/CUDA sources of the aesipe::pamr op library, shipped as package data and compiled by aesipe.ops._build."""
