"""e2e_asr.data"""
