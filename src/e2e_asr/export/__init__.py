"""e2e_asr.export"""
