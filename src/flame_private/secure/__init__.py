"""Homomorphic encryption layer, split by who may run it: ``public`` (anyone, the server included) and ``site``.

``secure/public``: CKKS parameters and the params-only context, the context-file
container, ciphertext envelopes and their validation, the keyless sum, the packing
layout and the overflow headroom.  Nothing there loads, makes or accepts a secret
key; the aggregation server imports only these modules (a test checks it in a
fresh interpreter).

``secure/site``: the shared CKKS secret key (key ceremony, loading, key check
value), encryption and decryption, and the ``flame keys`` commands.  Sites and the
key custodian only.

Import the submodule you need, never a package's contents: this ``__init__`` and
both sub-packages' deliberately import nothing.
"""
