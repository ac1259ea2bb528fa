"""Homomorphic encryption layer: key ceremony, contexts, packing, encryption, validation.

Import the submodule you need, never this package's contents: the split is the
security boundary.  ``params``, ``packing``, ``errors`` and ``_sealio`` are
server-safe (no secret key is ever loaded by them); ``keys``, ``keycheck`` and
``codec`` hold and use the shared CKKS secret key and belong to sites and the
key custodian only.  This ``__init__`` deliberately imports nothing, so ``import
flame_private.secure.params`` on the server does not drag key handling in.
"""
