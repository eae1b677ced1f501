"""aesipe.infer"""
