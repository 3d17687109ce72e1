"""faircalib.orchestrator"""
