"""Site-only HE code: the shared secret key (ceremony, loading, key check value), encryption and decryption.

Sites and the key custodian only: the aggregation server must never import this
package.  Imports nothing itself, so importing one module loads only what it needs.
"""
