#!/usr/bin/env python3
"""NATS decentralized-auth material for the tests, made without nsc.

nsc (the NATS tool that normally makes operators, accounts and users) is
not packaged in Debian, so this makes the same things from first
principles with python3-cryptography (ed25519):

  nkeys    ed25519 key pairs, written as base32 (RFC 4648, no padding) of
           prefix byte(s) + 32 key bytes + CRC-16/XMODEM (little-endian).
           A public key has one prefix byte that base32-encodes to its
           type letter: O (operator), A (account), U (user).  A seed has
           two: "S" for seed, then the type, so "SO..", "SA..", "SU..".
  JWTs     header.payload.signature, each base64url without padding; the
           header is {"typ":"JWT","alg":"ed25519-nkey"}; the signature is
           the issuer's ed25519 signature of the ASCII "header.payload".
           The claims carry jti, iat, iss (the signer's public key), sub
           (the subject's public key), name and "nats": {type, version 2,
           ...}.  jti is base32 (no padding) of the SHA-512/256 hash of the
           standard claims (aud, exp, iat, iss, name, nbf, sub, the ones
           that are set, in that order, compact JSON) without jti.
  .creds   a user's JWT and seed, each between "-----BEGIN ...-----" and
           "------END ...------" lines, as nsc writes them.

The formats follow the NATS reference implementations (nkeys, jwt v2) and
what nats-server 2.9 and nats.c 3.4 accept; the integration test that uses
this (test/t/013_nats_security.pl) is what proves them.

  nats_jwt.py DIR

writes into DIR, and prints the public keys as JSON:

  operator.jwt     the trusted operator, system account SYS
  server.conf      nats-server settings: operator mode, a MEMORY resolver
                   preloaded with SYS and APP (APP has JetStream, unlimited)
  user.creds       user "ism_state" of APP: the server accepts it
  stranger.creds   user "stranger" of account STRANGER, signed by the same
                   operator but unknown to the server: refused
"""

import base64
import json
import os
import sys
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

# prefix bytes (the type letter, in base32, is their top 5 bits)
PREFIX_SEED = 18 << 3      # 'S'
PREFIX_OPERATOR = 14 << 3  # 'O'
PREFIX_ACCOUNT = 0         # 'A'
PREFIX_USER = 20 << 3      # 'U'


def crc16(data):
    """CRC-16/XMODEM: polynomial 0x1021, initial value 0."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def b32(data):
    return base64.b32encode(data).decode('ascii').rstrip('=')


def with_crc(raw):
    return raw + crc16(raw).to_bytes(2, 'little')


class NKey:
    """An ed25519 key pair of one NATS type (operator, account or user)."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.seed_bytes = os.urandom(32)
        self.private = Ed25519PrivateKey.from_private_bytes(self.seed_bytes)

    @property
    def public(self):
        """'O..', 'A..' or 'U..': prefix byte, public key, CRC."""
        key = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return b32(with_crc(bytes([self.prefix]) + key))

    @property
    def seed(self):
        """'SO..', 'SA..' or 'SU..': the seed prefix and the type spread over
        two bytes (5 bits each for base32), the 32-byte seed, CRC."""
        b1 = PREFIX_SEED | (self.prefix >> 5)
        b2 = (self.prefix & 31) << 3
        return b32(with_crc(bytes([b1, b2]) + self.seed_bytes))

    def sign(self, data):
        return self.private.sign(data)


def b64url(data):
    return base64.urlsafe_b64encode(data).decode('ascii').rstrip('=')


def compact(obj):
    return json.dumps(obj, separators=(',', ':')).encode('utf-8')


def encode_jwt(issuer, subject_public, name, nats):
    """A JWT about subject_public, signed by the NKey issuer."""
    # the standard claims, in the order the reference implementation
    # serializes them; jti is their hash, taken before jti is set
    claims = {
        'iat': int(time.time()),
        'iss': issuer.public,
        'name': name,
        'sub': subject_public,
    }
    digest = hashes.Hash(hashes.SHA512_256())
    digest.update(compact(claims))
    claims = {'jti': b32(digest.finalize()), **claims, 'nats': nats}

    header = b64url(compact({'typ': 'JWT', 'alg': 'ed25519-nkey'}))
    to_sign = header + '.' + b64url(compact(claims))
    return to_sign + '.' + b64url(issuer.sign(to_sign.encode('ascii')))


def operator_jwt(operator, name, system_account):
    # an operator signs itself
    return encode_jwt(operator, operator.public, name, {
        'system_account': system_account.public,
        'type': 'operator',
        'version': 2,
    })


def account_jwt(operator, account, name, jetstream):
    # -1 is "no limit"; JetStream is on for an account whose memory or
    # disk storage limit is not 0
    limits = {
        'subs': -1, 'data': -1, 'payload': -1,
        'imports': -1, 'exports': -1, 'wildcards': True, 'conn': -1, 'leaf': -1,
    }
    if jetstream:
        limits.update({'mem_storage': -1, 'disk_storage': -1, 'streams': -1, 'consumer': -1})
    return encode_jwt(operator, account.public, name, {
        'limits': limits,
        'default_permissions': {'pub': {}, 'sub': {}},
        'type': 'account',
        'version': 2,
    })


def user_jwt(account, user, name):
    # no permissions listed: the account's defaults, which allow everything
    return encode_jwt(account, user.public, name, {
        'pub': {}, 'sub': {},
        'subs': -1, 'data': -1, 'payload': -1,
        'type': 'user',
        'version': 2,
    })


def creds(jwt, user):
    return f"""-----BEGIN NATS USER JWT-----
{jwt}
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
{user.seed}
------END USER NKEY SEED------

*************************************************************
"""


def write(path, text, mode=0o600):
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), 'w') as f:
        f.write(text)


def main(argv):
    if len(argv) != 2:
        sys.exit('usage: nats_jwt.py DIR')
    out = argv[1]
    os.makedirs(out, exist_ok=True)

    operator = NKey(PREFIX_OPERATOR)
    sys_account = NKey(PREFIX_ACCOUNT)
    app = NKey(PREFIX_ACCOUNT)
    stranger_account = NKey(PREFIX_ACCOUNT)
    user = NKey(PREFIX_USER)
    stranger = NKey(PREFIX_USER)

    write(f'{out}/operator.jwt', operator_jwt(operator, 'ism_state test', sys_account) + '\n', 0o644)
    # the system account must not have JetStream; the application's has
    accounts = {
        sys_account.public: account_jwt(operator, sys_account, 'SYS', jetstream=False),
        app.public: account_jwt(operator, app, 'APP', jetstream=True),
    }
    preload = ''.join(f'  {pub}: {jwt}\n' for pub, jwt in accounts.items())
    # (the operator JWT names the system account)
    write(f'{out}/server.conf', f"""operator: "{out}/operator.jwt"
resolver: MEMORY
resolver_preload: {{
{preload}}}
""", 0o644)
    write(f'{out}/user.creds', creds(user_jwt(app, user, 'ism_state'), user))
    write(f'{out}/stranger.creds',
          creds(user_jwt(stranger_account, stranger, 'stranger'), stranger))

    json.dump({
        'operator': operator.public,
        'accounts': {'SYS': sys_account.public, 'APP': app.public,
                     'STRANGER': stranger_account.public},
        'users': {'ism_state': user.public, 'stranger': stranger.public},
    }, sys.stdout, indent=1)
    print()


if __name__ == '__main__':
    main(sys.argv)
