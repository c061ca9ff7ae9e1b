"""Plausibility and integrity checks that decide whether an input may be trusted.

Each check raises ``ValueError`` with a one-line reason; the loaders (`gmvol.io`) turn it into an
`InputError` naming the file, so that these modules stay free of file and error plumbing.
"""
