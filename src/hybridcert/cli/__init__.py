"""The ``hybridcert`` command line."""
