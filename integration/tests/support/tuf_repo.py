"""A TUF repository for the tests, made with python-tuf's Metadata API (the
reference implementation) and securesystemslib's ECDSA P-256 signers, laid out
as sigstore's is: consistent snapshots, metadata at the base URL, targets under
targets/ with their SHA-256 as a prefix. Keys are kept in DIR/keys so later
steps can sign again.

  tuf_repo.py init DIR FILE [--expires-in SECS]   repository v1 with FILE as trusted_root.json
  tuf_repo.py publish DIR FILE [--expires-in SECS] new targets, snapshot and timestamp with FILE
  tuf_repo.py rotate-root DIR                       root v(N+1), signed by the old and new root keys

Each step prints the timestamp version it wrote (or the new root version).
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    MetaFile,
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

ROLES = ("root", "targets", "snapshot", "timestamp")
TARGET = "trusted_root.json"


def expiry(secs):
    return (datetime.now(timezone.utc) + timedelta(seconds=secs)).replace(microsecond=0)


def save_signer(d, role, signer):
    pem = signer._private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with open(os.path.join(d, "keys", f"{role}.pem"), "wb") as f:
        f.write(pem)


def load_signer(d, role):
    with open(os.path.join(d, "keys", f"{role}.pem"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    return CryptoSigner(key)


def write(d, name, md):
    md.to_file(os.path.join(d, name), JSONSerializer(compact=False))


def load(d, name):
    return Metadata.from_file(os.path.join(d, name))


def add_target(d, path, version, secs, signers):
    """targets, snapshot and timestamp at `version` (timestamp too) for `path`."""
    with open(path, "rb") as f:
        data = f.read()
    sha = hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.join(d, "targets"), exist_ok=True)
    with open(os.path.join(d, "targets", f"{sha}.{TARGET}"), "wb") as f:
        f.write(data)
    targets = Metadata(Targets(version=version, expires=expiry(secs)))
    targets.signed.targets[TARGET] = TargetFile.from_data(TARGET, data, ["sha256"])
    targets.sign(signers["targets"])
    write(d, f"{version}.targets.json", targets)
    snapshot = Metadata(Snapshot(version=version, expires=expiry(secs)))
    snapshot.signed.meta["targets.json"] = MetaFile(version=version)
    snapshot.sign(signers["snapshot"])
    write(d, f"{version}.snapshot.json", snapshot)
    timestamp = Metadata(Timestamp(version=version, expires=expiry(secs)))
    timestamp.signed.snapshot_meta = MetaFile(version=version)
    timestamp.sign(signers["timestamp"])
    write(d, "timestamp.json", timestamp)
    print(version)


def init(d, path, secs):
    os.makedirs(os.path.join(d, "keys"), exist_ok=True)
    signers = {role: CryptoSigner.generate_ecdsa() for role in ROLES}
    root = Metadata(Root(expires=expiry(max(secs, 86400)), consistent_snapshot=True))
    for role, signer in signers.items():
        root.signed.add_key(signer.public_key, role)
        save_signer(d, role, signer)
    root.sign(signers["root"])
    write(d, "1.root.json", root)
    shutil.copy(os.path.join(d, "1.root.json"), os.path.join(d, "root.json"))
    add_target(d, path, 1, secs, signers)


def publish(d, path, secs):
    signers = {role: load_signer(d, role) for role in ("targets", "snapshot", "timestamp")}
    version = load(d, "timestamp.json").signed.version + 1
    add_target(d, path, version, secs, signers)


def rotate_root(d):
    old = load(d, "root.json")
    old_signer = load_signer(d, "root")
    new_signer = CryptoSigner.generate_ecdsa()
    root = old.signed
    for keyid in list(root.roles["root"].keyids):
        root.revoke_key(keyid, "root")
    root.add_key(new_signer.public_key, "root")
    root.version += 1
    md = Metadata(root)
    md.sign(old_signer, append=True)
    md.sign(new_signer, append=True)
    write(d, f"{root.version}.root.json", md)
    shutil.copy(os.path.join(d, f"{root.version}.root.json"), os.path.join(d, "root.json"))
    save_signer(d, "root", new_signer)
    print(root.version)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("step", choices=["init", "publish", "rotate-root"])
    p.add_argument("dir")
    p.add_argument("file", nargs="?")
    p.add_argument("--expires-in", type=int, default=7 * 86400)
    a = p.parse_args()
    if a.step == "init":
        init(a.dir, a.file, a.expires_in)
    elif a.step == "publish":
        publish(a.dir, a.file, a.expires_in)
    else:
        rotate_root(a.dir)


if __name__ == "__main__":
    sys.exit(main())
