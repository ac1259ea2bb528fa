"""Server-safe HE code: parameters, context files, envelopes, validation, the keyless sum, packing, headroom.

Nothing in this package loads, makes or accepts a secret key, and nothing in it
imports ``flame_private.secure.site``.  Imports nothing itself.
"""
