"""A site of the federation (Flower ClientApp): protocol steps, training and evaluation, app pinning.

The only side of the federation that loads the shared CKKS secret key
(``flame_private.secure.site``).
"""
