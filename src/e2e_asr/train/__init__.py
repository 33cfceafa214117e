"""e2e_asr.train"""
