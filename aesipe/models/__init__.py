"""Networks: backbones, the AE-SIPE stage-1 network, IRN and DeepLabV3 builders.

Import the sub-modules directly (``aesipe.models.backbones``, ``aesipe.models.aesipe_net``); nothing is
re-exported here so importing the package stays cheap.
"""
