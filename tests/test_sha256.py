"""roar/record/sha256.py: the digests are hashlib's and hmac's, byte for byte,
whichever implementation computes them."""

import hashlib
import hmac
import os

from roar.record import sha256 as S


def test_sha256_is_hashlibs_on_both_sides_of_large():
    for n in (0, 1, 63, 64, 65, 1000, S.LARGE - 1, S.LARGE, S.LARGE + 7):
        data = os.urandom(n)
        h = S.sha256(data)
        assert h.hexdigest() == hashlib.sha256(data).hexdigest()
        h.update(b"more")
        assert h.digest() == hashlib.sha256(data + b"more").digest()


def test_hmac_sha256_is_hmacs():
    for key_len in (0, 1, 32, 63, 64, 65, 200):
        key = os.urandom(key_len)
        for msg in (b"", b"hunter2", "p\u00e4ss\udcff".encode(errors="surrogateescape"),
                    os.urandom(5000)):
            assert S.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).hexdigest()


def test_the_interpreters_own_is_used():
    # what spares `roar run` OpenSSL's start-up: not hashlib's constructor
    assert S._builtin.__module__ in ("_sha256", "_sha2")
