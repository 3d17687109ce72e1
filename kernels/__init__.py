"""faircalib.kernels"""
