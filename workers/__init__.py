"""faircalib.workers"""
