"""e2e_asr.decode"""
