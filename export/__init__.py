"""aesipe.export"""
