"""The pipeline's stages, one module each, named as in ``contract.protocol.STAGES``."""
