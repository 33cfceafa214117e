"""e2e_asr.model"""
